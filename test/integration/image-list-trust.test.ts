import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';
import { verifySignerCertificate } from '../../image-lists/signature.js';
import { runCli } from '../support/cli.js';
import { deleteTopology, RABBIT_URL, takeAll, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { createTestPki, type TestPki, type TestSigner } from '../support/test-pki.js';

/**
 * Who may sign a list, and where a list's token comes
 * from), through the real command line, with a CA, signers and a CRL made at test time.
 */

const TOKEN = 'appdb-tok-7d41c09e2b5a';
const BASIC = `Basic ${Buffer.from(`${TOKEN}:x-oauth-basic`).toString('base64')}`;
const IMAGE_ID = '5b8d1b3c-9c1f-4f44-8b1e-2f6f0c1a7e21';

let dir: string;
let pki: TestPki;
let appdb: TestSigner;
let intruder: TestSigner;
let revoked: TestSigner;
let server: TestServer;

/** A list whose declared endorser is its signer, so endorser pinning passes. */
function listSignedBy(signer: TestSigner, caDn: string, id = `list-of-${signer.dn.split('CN=')[1]}`): string {
  return JSON.stringify({
    'hv:imagelist': {
      'dc:identifier': id,
      'dc:date:created': '2024-01-01T00:00:00Z',
      'dc:date:expires': '2499-01-01T00:00:00Z',
      'hv:endorser': { 'hv:x509': { 'dc:creator': 'test', 'hv:ca': caDn, 'hv:dn': signer.dn, 'hv:email': 'a@b.c' } },
      'hv:images': [
        {
          'hv:image': {
            'dc:identifier': IMAGE_ID,
            'hv:uri': 'https://images.example.org/a.img',
            'hv:size': '1024',
            'sl:checksum:sha512': 'a'.repeat(128),
          },
        },
      ],
    },
  });
}

async function conf(config: Record<string, unknown>): Promise<string> {
  const file = path.join(dir, `c${Math.random().toString(16).slice(2)}.json`);
  const { security, ...rest } = config;
  await writeFile(file, JSON.stringify({ ...rest, security: { caPath: pki.caDir, ...(security as object) } }));
  return file;
}

const parse = async (
  config: Record<string, unknown>,
  url: string,
  extra: string[] = [],
  env: Record<string, string> = {},
) =>
  runCli(['-v', 'parse-image-list', '--conf', await conf(config), '--image-list-url', url, '--json', ...extra], {
    env,
  });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'snf-trust-'));
  pki = await createTestPki();
  [appdb, intruder, revoked] = await Promise.all([
    pki.issue('appdb.example.org'),
    pki.issue('intruder.example.org'),
    pki.issue('revoked.example.org'),
  ]);
  server = await startTestServer({
    routes: {
      '/appdb.list': { body: await pki.sign(listSignedBy(appdb, pki.caDn), appdb) },
      // Any certificate under a trusted CA can sign a list naming itself as endorser.
      '/intruder.list': { body: await pki.sign(listSignedBy(intruder, pki.caDn), intruder) },
      '/revoked.list': { body: await pki.sign(listSignedBy(revoked, pki.caDn), revoked) },
    },
  });
}, 120_000);

afterAll(async () => {
  await server?.close();
  await pki?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('point 4: only authorised endorsers may sign a list', () => {
  const authorised = () => ({ dn: appdb.dn, ca: pki.caDn });

  test('a list signed by any certificate of a trusted CA, naming itself as endorser, is refused', async () => {
    const r = await parse({ security: { endorsers: [authorised()] } }, server.at('/intruder.list'));
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `image list refused: signer ${intruder.dn} (CA ${pki.caDn}) is not an authorised endorser of this list (security.endorsers: ${appdb.dn} (CA ${pki.caDn}))`,
    );
    expect(r.stdout).toBe('');
  });

  test('with no endorser configured anywhere, a validly signed list is refused and the message names the key to set', async () => {
    const r = await parse({}, server.at('/appdb.list'));
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `no endorser is authorised for ${server.at('/appdb.list')}: set security.endorsers = [{ dn = "${appdb.dn}", ca = "${pki.caDn}" }]`,
    );
    expect(r.stderr).toContain('(security.endorserPolicy unset, so security.signaturePolicy = require applies)');
  });

  test('the authorised endorser is accepted, written in RFC 2253 order', async () => {
    const rfc2253 = (dn: string) => dn.slice(1).split('/').reverse().join(',');
    const r = await parse(
      { security: { endorsers: [{ dn: rfc2253(appdb.dn), ca: rfc2253(pki.caDn) }] } },
      server.at('/appdb.list'),
    );
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).signature).toEqual({
      status: 'verified',
      signer: { subject: appdb.dn, issuer: pki.caDn },
    });
  });

  test("a subscription's endorser applies to its own list only, instead of security.endorsers", async () => {
    const config = {
      security: { endorsers: [authorised()] },
      subscriptions: [
        {
          url: server.at('/intruder.list'),
          endorser: { dn: intruder.dn, ca: pki.caDn },
          every: '6h',
          vo: 'vo.example.org',
        },
      ],
    };
    const own = await parse(config, server.at('/intruder.list'));
    expect(own.exitCode).toBe(0);
    expect(JSON.parse(own.stdout).signature.status).toBe('verified');
    const other = await parse(config, server.at('/appdb.list'));
    expect(other.exitCode).toBe(0);
    const swapped = await parse(
      { subscriptions: [{ url: server.at('/appdb.list'), endorsers: [{ dn: intruder.dn, ca: pki.caDn }] }] },
      server.at('/appdb.list'),
    );
    expect(swapped.exitCode).toBe(1);
    expect(swapped.stderr).toContain('is not an authorised endorser of this list (subscriptions.0.endorsers: ');
  });

  test('security.endorserPolicy = warn accepts an unauthorised signer with a warning', async () => {
    const r = await parse({ security: { endorserPolicy: 'warn' } }, server.at('/intruder.list'));
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).signature.status).toBe('unauthorised-endorser');
    expect(r.stderr).toContain('image list accepted although no endorser is authorised');
  });

  test('enqueue-from-image-list refuses an unauthorised list before publishing anything', async () => {
    const r = await runCli([
      'enqueue-from-image-list',
      '-conf',
      await conf({ security: { endorsers: [authorised()] } }),
      '-image-list-url',
      server.at('/intruder.list'),
    ]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('is not an authorised endorser of this list');
    expect(r.stderr).not.toContain('Enqueue');
  });

  test('a subscription naming an undefined credential is a configuration error', async () => {
    const r = await parse(
      { subscriptions: [{ url: server.at('/appdb.list'), credential: 'nope' }] },
      server.at('/appdb.list'),
    );
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(
      "invalid configuration key 'subscriptions.0.credential': credential 'nope' is not defined in security.credentials",
    );
  });
});

describe('point 4: CRLs in caPath (*.r0, as fetch-crl writes them)', () => {
  const everyone = () => [appdb, revoked].map((s) => ({ dn: s.dn, ca: pki.caDn }));

  test('a revoked signer is refused, saying it was revoked; other signers of that CA still verify', async () => {
    // Without a CRL the revoked certificate still looks fine: that is what the CRL is for.
    const before = await parse({ security: { endorsers: everyone() } }, server.at('/revoked.list'));
    expect(before.exitCode).toBe(0);

    await pki.publishCrl([revoked]);
    const r = await parse({ security: { endorsers: everyone() } }, server.at('/revoked.list'));
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      "signature verification failed: the signer's certificate, or a CA certificate above it, has been revoked (CRL in security.caPath)",
    );
    expect(r.stderr).toContain(`(signer ${revoked.dn}, CA ${pki.caDn})`);

    const good = await parse({ security: { endorsers: everyone() } }, server.at('/appdb.list'));
    expect(good.exitCode).toBe(0);
    expect(good.stderr).toContain('"crlChecked":true');

    const off = await parse({ security: { endorsers: everyone(), crlCheck: 'off' } }, server.at('/revoked.list'));
    expect(off.exitCode).toBe(0);
  });

  test("a signer certificate kept with an accepted list (checked again on a 304) is refused once its CA's CRL revokes it", async () => {
    // Runs after the CRL above revoked `revoked`.
    const again = await verifySignerCertificate(await readFile(revoked.certPath, 'utf8'), { caPath: pki.caDir });
    expect(again).toEqual({
      ok: false,
      reason:
        "the signer certificate no longer verifies: the signer's certificate, or a CA certificate above it, has been revoked (CRL in security.caPath)",
    });
    const good = await verifySignerCertificate(await readFile(appdb.certPath, 'utf8'), { caPath: pki.caDir });
    expect(good).toEqual({ ok: true, signer: { subject: appdb.dn, issuer: pki.caDn } });
  });
});

describe('point 5 (list side): the token from a file, the environment or a named credential', () => {
  const authorisedConf = (extra: Record<string, unknown> = {}) => {
    const { security, ...rest } = extra;
    return { security: { endorsers: [{ dn: appdb.dn, ca: pki.caDn }], ...(security as object) }, ...rest };
  };

  async function tokenFile(): Promise<string> {
    const file = path.join(dir, 'appdb.token');
    await writeFile(file, `${TOKEN}\n`);
    await chmod(file, 0o600);
    return file;
  }

  async function expectTokenSent(
    run: () => Promise<{ exitCode: number; stdout: string; stderr: string }>,
  ): Promise<void> {
    server.requests.length = 0;
    const r = await run();
    expect(r.stderr).not.toContain('unexpected');
    expect(r.exitCode).toBe(0);
    expect(server.requests.map((q) => q.headers.authorization)).toEqual([BASIC]);
    expect(r.stderr).toContain('"level":20'); // -v: debug lines were written, and none shows the token
    expect(`${r.stdout}${r.stderr}`).not.toContain(TOKEN);
  }

  test('--token-file FILE', async () => {
    const file = await tokenFile();
    await expectTokenSent(async () => parse(authorisedConf(), server.at('/appdb.list'), ['--token-file', file]));
  });

  test('-token-file FILE (the single-dash spelling)', async () => {
    const file = await tokenFile();
    await expectTokenSent(async () =>
      runCli([
        '-v',
        'parse-image-list',
        '-conf',
        await conf(authorisedConf()),
        '-image-list-url',
        server.at('/appdb.list'),
        '-token-file',
        file,
      ]),
    );
  });

  test('$SNF_VMCATCHER_IMAGE_LIST_TOKEN', async () => {
    await expectTokenSent(async () =>
      parse(authorisedConf(), server.at('/appdb.list'), [], { SNF_VMCATCHER_IMAGE_LIST_TOKEN: TOKEN }),
    );
  });

  test('show-env does not print $SNF_VMCATCHER_IMAGE_LIST_TOKEN', async () => {
    const r = await runCli(['show-env'], { env: { SNF_VMCATCHER_IMAGE_LIST_TOKEN: TOKEN } });
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).SNF_VMCATCHER_IMAGE_LIST_TOKEN).toBe('***redacted***');
    expect(r.stdout).not.toContain(TOKEN);
  });

  test('--credential NAME, a credential read from a file', async () => {
    const file = await tokenFile();
    await expectTokenSent(async () =>
      parse(authorisedConf({ security: { credentials: { appdb: { file } } } }), server.at('/appdb.list'), [
        '--credential',
        'appdb',
      ]),
    );
  });

  test("the subscription's credential, read from the environment", async () => {
    const config = authorisedConf({
      security: { credentials: { appdb: { env: 'APPDB_TOKEN_FOR_TEST' } } },
      subscriptions: [{ url: server.at('/appdb.list'), credential: 'appdb' }],
    });
    await expectTokenSent(async () => parse(config, server.at('/appdb.list'), [], { APPDB_TOKEN_FOR_TEST: TOKEN }));
  });

  test('no token is sent to a list no subscription or option gives one to', async () => {
    server.requests.length = 0;
    const r = await parse(
      authorisedConf({
        security: { credentials: { appdb: TOKEN } },
        subscriptions: [{ url: server.at('/intruder.list'), credential: 'appdb' }],
      }),
      server.at('/appdb.list'),
    );
    expect(r.exitCode).toBe(0);
    expect(server.requests[0].headers.authorization).toBeUndefined();
  });

  test('the token is not sent to another host the list server redirects to', async () => {
    const other = await startTestServer({
      routes: { '/appdb.list': { body: await pki.sign(listSignedBy(appdb, pki.caDn), appdb) } },
    });
    const origin = await startTestServer({
      hostname: 'localhost',
      routes: { '/list': { redirect: other.at('/appdb.list') } },
    });
    try {
      const r = await parse(authorisedConf(), origin.at('/list'), ['--token-file', await tokenFile()]);
      expect(r.exitCode).toBe(0);
      expect(origin.requests[0].headers.authorization).toBe(BASIC);
      expect(other.requests[0].headers.authorization).toBeUndefined();
    } finally {
      await other.close();
      await origin.close();
    }
  });

  test('two token options at once, an empty or unreadable token file are usage errors', async () => {
    const file = await tokenFile();
    const both = await parse(authorisedConf(), server.at('/appdb.list'), ['--token-file', file, '--credential', 'x']);
    expect(both.exitCode).toBe(2);
    expect(both.stderr).toContain('give only one of --token-file, --credential');
    const empty = path.join(dir, 'empty.token');
    await writeFile(empty, '\n');
    const r = await parse(authorisedConf(), server.at('/appdb.list'), ['--token-file', empty]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`--token-file ${empty} is empty`);
    const missing = await parse(authorisedConf(), server.at('/appdb.list'), [
      '--token-file',
      path.join(dir, 'missing'),
    ]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('cannot read it (ENOENT)');
  });
});

describe('enqueue-from-image-list speaks for the list id its URL is pinned to', () => {
  const topology = uniqueTopology('pin');
  let work: string;
  const enqueueConf = async (extra = '') =>
    writeConf(
      topology,
      `worker { workingFolder = "${work}" }
security {
  caPath = "${pki.caDir}"
  endorsers = [ { dn = "${appdb.dn}", ca = "${pki.caDn}" } ]
}
${extra}`,
    );
  const enqueue = async (url: string, extra = '') =>
    runCli(['enqueue-from-image-list', '--conf', await enqueueConf(extra), '--image-list-url', url]);

  beforeAll(async () => {
    work = await mkdtemp(path.join(dir, 'work-'));
    const conn = await amqp.connect(RABBIT_URL);
    try {
      const ch = await conn.createChannel();
      await ch.assertExchange(topology.exchange, 'topic', { durable: true });
      await ch.assertQueue(topology.queue, { durable: true });
      await ch.bindQueue(topology.queue, topology.exchange, topology.routingKey);
    } finally {
      await conn.close();
    }
  });
  afterAll(async () => {
    await deleteTopology(topology);
  });

  test('the first list id enqueued from a URL is pinned; a list there carrying another id is refused, nothing enqueued', async () => {
    server.route('/pinned.list', { body: await pki.sign(listSignedBy(appdb, pki.caDn, 'list-one'), appdb) });
    const first = await enqueue(server.at('/pinned.list'));
    expect(first.exitCode).toBe(0);
    expect(first.stderr).toContain('Enqueued 1 event(s)');
    expect((await takeAll(topology.queue)).length).toBe(1);
    expect(JSON.parse(await readFile(path.join(work, 'list-ids.json'), 'utf8'))).toEqual({
      [server.at('/pinned.list')]: 'list-one',
    });

    server.route('/pinned.list', { body: await pki.sign(listSignedBy(appdb, pki.caDn, 'list-two'), appdb) });
    const other = await enqueue(server.at('/pinned.list'));
    expect(other.exitCode).toBe(1);
    expect(other.stderr).toContain(
      `Image list ${server.at('/pinned.list')} refused: the list carries dc:identifier list-two, but this URL speaks for list list-one (first enqueued, pinned in ${path.join(work, 'list-ids.json')}); nothing enqueued`,
    );
    expect(await takeAll(topology.queue)).toEqual([]);
  });

  test("a subscription's configured listId wins; another subscription's listId or a registry project's id is refused", async () => {
    server.route('/configured.list', { body: await pki.sign(listSignedBy(appdb, pki.caDn, 'list-three'), appdb) });
    const configured = await enqueue(
      server.at('/configured.list'),
      `subscriptions = [ { url = "${server.at('/configured.list')}", listId = "list-four" } ]`,
    );
    expect(configured.exitCode).toBe(1);
    expect(configured.stderr).toContain(
      'refused: the list carries dc:identifier list-three, but this URL speaks for list list-four (subscriptions[].listId)',
    );
    const owned = await enqueue(
      server.at('/configured.list'),
      `subscriptions = [ { url = "https://elsewhere.example.org/x.list", listId = "list-three" } ]`,
    );
    expect(owned.exitCode).toBe(1);
    expect(owned.stderr).toContain(
      "refused: list id list-three is the subscription of https://elsewhere.example.org/x.list's (its listId)",
    );
    server.route('/registry-id.list', {
      body: await pki.sign(listSignedBy(appdb, pki.caDn, 'registry.example.org/egi_vm_images'), appdb),
    });
    const registry = await enqueue(
      server.at('/registry-id.list'),
      `subscriptions = [ { registry = "https://registry.example.org", project = "egi_vm_images" } ]`,
    );
    expect(registry.exitCode).toBe(1);
    expect(registry.stderr).toContain(
      "refused: list id registry.example.org/egi_vm_images is the registry project https://registry.example.org/egi_vm_images's",
    );
    expect(await takeAll(topology.queue)).toEqual([]);
  });
});
