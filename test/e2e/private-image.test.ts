import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { runCli, type CliResult } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import {
  generateSelfSignedCertificate,
  startTestServer,
  type SelfSignedCertificate,
  type TestServer,
} from '../support/http-server.js';
import { Site } from '../support/site.js';

/**
 * A private image (HTTPS, 401 without the token, served with HTTP Basic
 * `token:x-oauth-basic`) registers through the real CLI and a real worker, with the token named
 * by a `security.credentialRules` mapping or by `register-now --credential`, the token itself
 * read from a file on the worker. The token never reaches the workflow history or any log.
 */
describe('a private image downloaded with a named credential', () => {
  const token = `tok-${randomBytes(12).toString('hex')}`;
  const basic = `Basic ${Buffer.from(`${token}:x-oauth-basic`).toString('base64')}`;
  let site: Site;
  let dir: string;
  let cert: SelfSignedCertificate;
  let server: TestServer;
  /** The same host name and certificate on another port: a rule's origin does not cover it. */
  let otherPort: TestServer;
  let sha512: string;
  let connection: Connection;
  const outputs: CliResult[] = [];

  beforeAll(async () => {
    site = await Site.create('private');
    dir = site.dir;
    const raw = path.join(dir, 'disk.raw');
    const qcow2 = path.join(dir, 'private.qcow2');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    sha512 = (await execa('sha512sum', [qcow2])).stdout.split(' ')[0];
    cert = await generateSelfSignedCertificate('localhost');
    const route = { file: qcow2, authorization: basic };
    server = await startTestServer({
      tls: cert,
      hostname: 'localhost',
      routes: { '/ruled/debian.qcow2': route, '/named/ubuntu.qcow2': route, '/named/nothing.qcow2': route },
    });
    otherPort = await startTestServer({ tls: cert, hostname: 'localhost', routes: { '/ruled/debian.qcow2': route } });
    await writeFile(path.join(dir, 'appdb.token'), `${token}\n`, { mode: 0o600 });

    // The rule covers the origin https://localhost:<port>; the same server reached as 127.0.0.1
    // (also in the certificate), or the same host name on another port, is covered by no rule,
    // so there only --credential sends the token.
    // The worker trusts the test certificate the way a site trusts its CA: no --insecure-ssl.
    await site.start({
      command: 'worker',
      conf: `security {
  credentials { appdb = { file = "${dir}/appdb.token" } }
  credentialRules = [ { origin = "https://localhost:${server.port}", credential = "appdb" } ]
}`,
      synnefo: 'prepare = false',
      env: { NODE_EXTRA_CA_CERTS: cert.certPath, SNF_VMCATCHER_LOG_LEVEL: 'debug' },
    });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  });

  afterAll(async () => {
    await site?.close();
    await server?.close();
    await otherPort?.close();
    await cert?.cleanup();
    await connection?.close();
  });

  const register = async (url: string, extra: string[] = []) => {
    const result = await runCli(
      [
        'register-now',
        '--conf',
        site.conf,
        '--url',
        url,
        '--kamaki-cloud',
        'e2e',
        '--format',
        'qcow2',
        '--sha512',
        sha512,
        ...extra,
      ],
      {
        env: site.env,
        timeoutMs: 180_000,
      },
    );
    outputs.push(result);
    return result;
  };

  /** The workflow's whole history as one string, every byte field (payloads) decoded as UTF-8 text. */
  const oneHistoryText = async (workflowId: string) => {
    const history = await new Client({ connection }).workflow.getHandle(workflowId).fetchHistory();
    const plain = (v: unknown): unknown => {
      if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
      if (Array.isArray(v)) return v.map(plain);
      if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
      return v;
    };
    // Payloads are JSON text inside the JSON: unescape their quotes so fields read naturally.
    return JSON.stringify(plain(history)).replaceAll('\\"', '"');
  };
  /** The histories of the image revision's workflow (the event arrives there) and of its registration. */
  const historyText = async (ids: string[]) => (await Promise.all(ids.map(oneHistoryText))).join('\n');
  const workflowIdOf = (result: CliResult) => {
    const m = /Sent the image to workflow (\S+); the registration is (\S+)/.exec(result.stderr);
    return m ? [m[1], m[2]] : [];
  };

  test('without a credential the server answers 401 and the registration fails, naming it', async () => {
    const result = await register(server.at('/named/nothing.qcow2').replace('localhost', '127.0.0.1'));
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/Registration failed: .*HTTP 401 \(check the token\)/);
  }, 200_000);

  test('a credentialRules mapping (image origin → credential name) sends the token read from a file; the history does not hold it', async () => {
    const result = await register(server.at('/ruled/debian.qcow2'));
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/^Registered image \S+/);
    const history = await historyText(workflowIdOf(result));
    // Booleans, not the history itself, in a failure message (it is long).
    expect(history.includes('"imageId":"debian.qcow2"')).toBe(true);
    expect(history.includes(token)).toBe(false);
    expect(history.includes(basic)).toBe(false);
    // Nothing named a credential in the workflow input: the worker applied the rule.
    expect(history.includes('credentialName')).toBe(false);
  }, 200_000);

  test('a rule binds its port: the same host name on another port gets no token', async () => {
    // Its own identifier: the same file under the ruled test's identity would be found registered already.
    const result = await register(otherPort.at('/ruled/debian.qcow2'), ['--image-identifier', 'other-port']);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/Registration failed: .*HTTP 401 \(check the token\)/);
    expect(otherPort.requests.length).toBeGreaterThan(0);
    expect(otherPort.requests.map((r) => r.headers.authorization)).toEqual(otherPort.requests.map(() => undefined));
  }, 200_000);

  test('register-now --credential NAME sends the named token where no rule applies; only the name is in the history', async () => {
    const result = await register(server.at('/named/ubuntu.qcow2').replace('localhost', '127.0.0.1'), [
      '--credential',
      'appdb',
    ]);
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toMatch(/^Registered image \S+/);
    const history = await historyText(workflowIdOf(result));
    expect(history.includes('"credentialName":"appdb"')).toBe(true);
    expect(history.includes(token)).toBe(false);
    expect(history.includes(basic)).toBe(false);
  }, 200_000);

  test('register-now refuses a --credential that is not a credential name, before starting anything', async () => {
    const result = await runCli(
      ['register-now', '--conf', site.conf, '--url', server.at('/named/nothing.qcow2'), '--credential', 'app db;x'],
      { env: site.env },
    );
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toContain("--credential 'app db;x' is not a credential name");
    expect(result.stderr).not.toContain('Started workflow');
  });

  test('the requests carried the token only where a credential was named, and no log printed it', async () => {
    const byPath = (p: string) => server.requests.filter((r) => r.path === p).map((r) => r.headers.authorization);
    expect(byPath('/named/nothing.qcow2').every((a) => a === undefined)).toBe(true);
    expect(byPath('/ruled/debian.qcow2')).toContain(basic);
    expect(byPath('/named/ubuntu.qcow2')).toContain(basic);
    expect(await site.cloud.images()).toHaveLength(2);
    const logs = [site.service!.log(), ...outputs.flatMap((o) => [o.stdout, o.stderr])].join('\n');
    expect(logs).toContain('download complete');
    expect(logs).not.toContain(token);
    expect(logs).not.toContain(basic.slice('Basic '.length));
  });
});
