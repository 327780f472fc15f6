import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli, SHARED } from '../support/cli.js';
import {
  generateSelfSignedCertificate,
  startTestServer,
  type SelfSignedCertificate,
  type TestServer,
} from '../support/http-server.js';

const LISTS = path.join(SHARED, 'imagelists');
const CA = path.join(LISTS, 'cloudkeeper-test-ca-9da13359.0');
const SIGNED = 'cloudkeeper-imagelist01.signed';
const INVALID = 'cloudkeeper-imagelist_invalid.signed';
const PLAIN = 'hepixvmitrust-imagelist.json';
const CLOUDKEEPER_IMAGES = ['c0482bc2-bf41-5d49-aaaa-a750174a186b', '662b0e71-3e21-bbbb-b6a1-cc2f51319fa7'];
const HEPIX_IMAGES = ['488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d'];
const TOKEN = 'tok-3f9a1c7e5b2d4068';
/** The self-signed certificate that signs the cloudkeeper list: the site trusts it as an endorser. */
const CK_SIGNER = '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd';

let dir: string;
let http: TestServer;
let tlsCert: SelfSignedCertificate;
let httpsServer: TestServer;

/** Writes a JSON config with the given security section; returns its path. */
async function conf(
  security: Record<string, unknown>,
  name = `c${Math.random().toString(16).slice(2)}.json`,
): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(
    file,
    JSON.stringify({
      security: { allowedFileFolders: [LISTS], caPath: CA, endorsers: [{ dn: CK_SIGNER, ca: CK_SIGNER }], ...security },
      spool: { folder: path.join(dir, 'spool') },
    }),
  );
  return file;
}

const fileUrl = (name: string) => `file://${path.join(LISTS, name)}`;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'snf-il-'));
  http = await startTestServer({
    routes: Object.fromEntries([SIGNED, INVALID, PLAIN].map((f) => [`/${f}`, { file: path.join(LISTS, f) }])),
  });
  tlsCert = await generateSelfSignedCertificate('localhost');
  httpsServer = await startTestServer({
    tls: tlsCert,
    hostname: 'localhost',
    routes: { '/image.list': { file: path.join(LISTS, SIGNED) } },
  });
});

afterAll(async () => {
  await http?.close();
  await httpsServer?.close();
  await tlsCert?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('parse-image-list prints every image of each fixture list', () => {
  const cases: Array<[string, string[]]> = [
    [SIGNED, CLOUDKEEPER_IMAGES],
    [INVALID, CLOUDKEEPER_IMAGES],
    [PLAIN, HEPIX_IMAGES],
  ];
  test.each(cases)('%s from a file: URL (policy warn)', async (name, ids) => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'warn', pinEndorser: false }),
      '--image-list-url',
      fileUrl(name),
    ]);
    expect(r.exitCode).toBe(0);
    for (const id of ids) expect(r.stdout).toContain(id);
    expect(r.stderr).toContain(`Found ${ids.length} events`);
  });

  test.each(cases)('%s over HTTP, as --json', async (name, ids) => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'warn', pinEndorser: false }),
      '--image-list-url',
      http.at(`/${name}`),
      '--json',
    ]);
    expect(r.exitCode).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.imageList.images.map((i: { identifier: string }) => i.identifier)).toEqual(ids);
    expect(out.invalid).toEqual([]);
  });

  test('rows are sorted by hv:size, smallest first, as the original did', async () => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ pinEndorser: false }),
      '--image-list-url',
      fileUrl(SIGNED),
    ]);
    expect(r.stdout.indexOf(CLOUDKEEPER_IMAGES[0])).toBeLessThan(r.stdout.indexOf(CLOUDKEEPER_IMAGES[1]));
    expect(r.stdout).toMatch(/121243136[\s\S]*581816320/);
  });

  test('the expired hepixvmitrust list is flagged', async () => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'accept' }),
      '--image-list-url',
      fileUrl(PLAIN),
      '--json',
    ]);
    expect(JSON.parse(r.stdout).imageList.expired).toBe(true);
    expect(JSON.parse(r.stdout).signature.status).toBe('unsigned');
  });
});

describe('signatures against the cloudkeeper test CA (security.caPath = the .0 file)', () => {
  test('the valid signed list verifies', async () => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'require', pinEndorser: false }),
      '--image-list-url',
      fileUrl(SIGNED),
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('Signature:  verified (signer /C=AU/ST=Some-State/O=Internet Widgits Pty Ltd');
  });

  test('the valid signed list verifies against a hashed CA directory too (over HTTP)', async () => {
    const caDir = await mkdtemp(path.join(dir, 'ca-'));
    await symlink(CA, path.join(caDir, '9da13359.0'));
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ caPath: caDir, pinEndorser: false }),
      '--image-list-url',
      http.at(`/${SIGNED}`),
      '--json',
    ]);
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).signature.status).toBe('verified');
  });

  test('cloudkeeper-imagelist_invalid.signed is refused with a clear error', async () => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'require', pinEndorser: false }),
      '--image-list-url',
      fileUrl(INVALID),
    ]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('image list refused: signature verification failed: self-signed certificate');
    expect(r.stdout).toBe('');
  });

  test('with endorser pinning the valid list is refused: its signer is not its declared endorser', async () => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'require', pinEndorser: true }),
      '--image-list-url',
      http.at(`/${SIGNED}`),
    ]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      'is not the declared endorser /DC=XXX/DC=YYY/C=ZZZ/O=Hosts/O=AA.net/CN=some.unknown.source',
    );
  });

  test('an unsigned list is refused under require', async () => {
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ signaturePolicy: 'require' }),
      '--image-list-url',
      fileUrl(PLAIN),
    ]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('the list is not signed');
  });

  test('get-image-list prints the JSON openssl verified', async () => {
    const r = await runCli([
      'get-image-list',
      '--conf',
      await conf({ pinEndorser: false }),
      '--image-list-url',
      fileUrl(SIGNED),
    ]);
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout)['hv:imagelist']['dc:identifier']).toBe('76fdee70-8119-5d33-aaaa-3c57e1c60df1');
  });
});

describe('file: URLs', () => {
  test('a file outside security.allowedFileFolders is refused, also through a symlink', async () => {
    const allowed = await mkdtemp(path.join(dir, 'allowed-'));
    await symlink('/etc/passwd', path.join(allowed, 'image.list'));
    const config = await conf({ allowedFileFolders: [allowed] });
    const direct = await runCli(['get-image-list', '--conf', config, '--image-list-url', 'file:///etc/passwd']);
    expect(direct.exitCode).toBe(2);
    expect(direct.stderr).toContain('outside security.allowedFileFolders');
    const linked = await runCli([
      'get-image-list',
      '--conf',
      config,
      '--image-list-url',
      `file://${allowed}/image.list`,
    ]);
    expect(linked.exitCode).toBe(2);
    expect(linked.stderr).toContain('(really /etc/passwd) is outside security.allowedFileFolders');
    expect(linked.stdout).not.toContain('root:');
  });

  test('a percent-encoded file: URL is decoded', async () => {
    const spaced = await mkdtemp(path.join(dir, 'with space-'));
    await writeFile(path.join(spaced, 'my list.json'), await readFile(path.join(LISTS, PLAIN)));
    const url = `file://${encodeURI(path.join(spaced, 'my list.json'))}`;
    expect(url).toContain('%20');
    const r = await runCli([
      'parse-image-list',
      '--conf',
      await conf({ allowedFileFolders: [spaced], signaturePolicy: 'accept' }),
      '--image-list-url',
      url,
    ]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(HEPIX_IMAGES[0]);
  });
});

describe('HTTPS, tokens, limits', () => {
  test('a self-signed server certificate gives a clear TLS error without --insecure-ssl, and works with it', async () => {
    const config = await conf({ pinEndorser: false });
    const refused = await runCli([
      'parse-image-list',
      '--conf',
      config,
      '--image-list-url',
      httpsServer.at('/image.list'),
    ]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/TLS error fetching https:\/\/localhost:\d+\/image.list: self-signed certificate/);
    const insecure = await runCli([
      'parse-image-list',
      '--conf',
      config,
      '--image-list-url',
      httpsServer.at('/image.list'),
      '-insecure-ssl',
    ]);
    expect(insecure.exitCode).toBe(0);
    expect(insecure.stdout).toContain(CLOUDKEEPER_IMAGES[0]);
    expect(insecure.stderr).toContain('TLS certificate checks are OFF');
  });

  test('the token arrives as Basic token:x-oauth-basic and appears in no log line, even with -v', async () => {
    httpsServer.requests.length = 0;
    const r = await runCli([
      '-v',
      'parse-image-list',
      '-conf',
      await conf({ pinEndorser: false }),
      '-image-list-url',
      httpsServer.at('/image.list'),
      '-token',
      TOKEN,
      '-insecure-ssl',
    ]);
    expect(r.exitCode).toBe(0);
    expect(httpsServer.requests[0].headers.authorization).toBe(
      `Basic ${Buffer.from(`${TOKEN}:x-oauth-basic`).toString('base64')}`,
    );
    expect(r.stderr).toContain('"level":20'); // debug lines were written
    expect(`${r.stdout}${r.stderr}`).not.toContain(TOKEN);
  });

  test('a token in the URL userinfo is sent as Basic auth and never printed, even in an error', async () => {
    http.requests.length = 0;
    const url = http.at('/missing.list').replace('http://', `http://${TOKEN}:x-oauth-basic@`);
    const r = await runCli(['-v', 'parse-image-list', '--conf', await conf({}), '--image-list-url', url]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/HTTP 404/);
    expect(http.requests[0].headers.authorization).toBe(
      `Basic ${Buffer.from(`${TOKEN}:x-oauth-basic`).toString('base64')}`,
    );
    expect(`${r.stdout}${r.stderr}`).not.toContain(TOKEN);
  });

  test('the token is not sent after a redirect to another host', async () => {
    const other = await startTestServer({ routes: { '/list.json': { file: path.join(LISTS, PLAIN) } } });
    const origin = await startTestServer({
      hostname: 'localhost',
      routes: { '/list': { redirect: other.at('/list.json') } },
    });
    try {
      const r = await runCli([
        'parse-image-list',
        '--conf',
        await conf({ signaturePolicy: 'accept' }),
        '--image-list-url',
        origin.at('/list'),
        '--token',
        TOKEN,
      ]);
      expect(r.exitCode).toBe(0);
      expect(origin.requests[0].headers.authorization).toBeDefined();
      expect(other.requests[0].headers.authorization).toBeUndefined();
    } finally {
      await other.close();
      await origin.close();
    }
  });

  test('redirects are bounded and https→http is refused', async () => {
    http.route('/loop', { redirect: '/loop' });
    httpsServer.route('/down', { redirect: http.at(`/${PLAIN}`) });
    const config = await conf({ signaturePolicy: 'accept', maxRedirects: 3 });
    const loop = await runCli(['get-image-list', '--conf', config, '--image-list-url', http.at('/loop')]);
    expect(loop.exitCode).toBe(1);
    expect(loop.stderr).toContain('too many redirects (more than 3)');
    const down = await runCli([
      'get-image-list',
      '--conf',
      config,
      '--image-list-url',
      httpsServer.at('/down'),
      '--insecure-ssl',
    ]);
    expect(down.exitCode).toBe(1);
    expect(down.stderr).toContain('refusing redirect from https to plain http');
  });

  test('a list larger than security.maxImageListBytes and a server that stalls are refused', async () => {
    http.route('/slow', { file: path.join(LISTS, PLAIN), chunks: 4, chunkDelayMs: 3000 });
    const tooBig = await runCli([
      'get-image-list',
      '--conf',
      await conf({ signaturePolicy: 'accept', maxImageListBytes: 1000 }),
      '--image-list-url',
      http.at(`/${PLAIN}`),
    ]);
    expect(tooBig.exitCode).toBe(1);
    expect(tooBig.stderr).toContain('is too large: 1678 bytes declared, the limit is 1000');
    const slow = await runCli([
      'get-image-list',
      '--conf',
      await conf({ signaturePolicy: 'accept', readTimeoutMs: 500 }),
      '--image-list-url',
      http.at('/slow'),
    ]);
    expect(slow.exitCode).toBe(1);
    expect(slow.stderr).toContain('read timeout');
  });
});
