import { readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { runCli } from '../support/cli.js';
import {
  generateSelfSignedCertificate,
  startTestServer,
  type SelfSignedCertificate,
  type TestServer,
} from '../support/http-server.js';
import { makeRawDisk, tempDir } from '../support/pipeline-fixtures.js';

/**
 * `--insecure-ssl` is an exception for the image host the event or the command names, not for
 * every host a redirect leads to. Two real HTTPS servers, each with its own self-signed
 * certificate: the first is reached as 127.0.0.1, the second as `localhost` (another host name).
 */
describe('--insecure-ssl skips TLS checks for the image host only, not for the hosts it redirects to', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let work: string;
  let imageHost: TestServer;
  let sameHostOtherPort: TestServer;
  let otherHost: TestServer;
  const certs: SelfSignedCertificate[] = [];
  let disk: Buffer;

  beforeAll(async () => {
    root = await tempDir('snf-insecure-');
    work = path.join(root.dir, 'work');
    await makeRawDisk(path.join(root.dir, 'disk.img'), 1);
    disk = await readFile(path.join(root.dir, 'disk.img'));
    for (let i = 0; i < 3; i++) certs.push(await generateSelfSignedCertificate());
    otherHost = await startTestServer({
      tls: certs[0],
      hostname: 'localhost',
      routes: { '/disk.img': { body: disk }, '/image.list': { body: 'x' } },
    });
    sameHostOtherPort = await startTestServer({ tls: certs[1], routes: { '/disk.img': { body: disk } } });
    imageHost = await startTestServer({
      tls: certs[2],
      routes: {
        '/disk.img': { body: disk },
        '/to-other-host.img': { redirect: otherHost.at('/disk.img') },
        '/to-same-host.img': { redirect: sameHostOtherPort.at('/disk.img') },
        '/to-other-host.list': { redirect: otherHost.at('/image.list') },
      },
    });
  });

  afterAll(async () => {
    await Promise.all([imageHost?.close(), sameHostOtherPort?.close(), otherHost?.close()]);
    for (const cert of certs) await cert.cleanup();
    await root.cleanup();
  });

  test('transform: the image host itself is accepted with insecure TLS', async () => {
    const result = await runCli([
      'transform',
      '--url',
      imageHost.at('/disk.img'),
      '--working-folder',
      work,
      '--insecure-ssl',
    ]);
    expect(result.exitCode).toBe(0);
    const file = result.stdout.trim().split('\n')[1];
    expect((await readFile(file)).equals(disk)).toBe(true);
    expect(result.stderr).toContain('TLS certificate and host name checks are OFF for host 127.0.0.1');
    await rm(path.dirname(file), { recursive: true });
  });

  test('transform: a redirect to another host with a self-signed certificate fails with a TLS error naming that host', async () => {
    const before = await readdir(work).catch(() => []);
    const result = await runCli([
      'transform',
      '--url',
      imageHost.at('/to-other-host.img'),
      '--working-folder',
      work,
      '--insecure-ssl',
    ]);
    expect(result.exitCode).toBe(1);
    const lines = result.stderr.split('\n').filter((l) => l.startsWith('snf-vmcatcher:'));
    expect(lines).toEqual([
      expect.stringContaining(
        `TLS error fetching ${otherHost.at('/disk.img')}: self-signed certificate (host localhost is verified: --insecure-ssl covers only the image host 127.0.0.1`,
      ),
    ]);
    // The first hop was made (and accepted); the second host was contacted but refused by us.
    expect(imageHost.requests.map((r) => r.path)).toContain('/to-other-host.img');
    expect(otherHost.requests).toEqual([]);
    expect(await readdir(work).catch(() => [])).toEqual(before);
  });

  test('transform: a redirect to the same host name (another port) keeps the exception', async () => {
    const result = await runCli([
      'transform',
      '--url',
      imageHost.at('/to-same-host.img'),
      '--working-folder',
      work,
      '--insecure-ssl',
    ]);
    expect(result.exitCode).toBe(0);
    const file = result.stdout.trim().split('\n')[1];
    expect((await readFile(file)).equals(disk)).toBe(true);
    expect(sameHostOtherPort.requests.map((r) => r.path)).toContain('/disk.img');
    await rm(path.dirname(file), { recursive: true });
  });

  test('image lists: a redirect from the list host to another host is verified too', async () => {
    const result = await runCli([
      'parse-image-list',
      '--image-list-url',
      imageHost.at('/to-other-host.list'),
      '--insecure-ssl',
    ]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(
      `TLS error fetching ${otherHost.at('/image.list')}: self-signed certificate (host localhost is verified`,
    );
    expect(otherHost.requests).toEqual([]);
  });
});
