import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { SyncImageListInput } from '../../core/workflow-contract.js';
import { subscriptionScheduleId } from '../../subscriptions/schedules.js';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import {
  generateSelfSignedCertificate,
  startTestServer,
  type SelfSignedCertificate,
  type TestServer,
} from '../support/http-server.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { createTestPki, type TestPki, type TestSigner } from '../support/test-pki.js';
import { servedDisk } from '../support/throttled-file-server.js';

const MiB = 1024 * 1024;
const LIST_A = 'trust-list-a';
const LIST_B = 'trust-list-b';
const REGISTRY_PROJECT_ID = '127.0.0.1:9/egi_vm_images';

type Disk = Awaited<ReturnType<typeof servedDisk>>;

/**
 * The trust boundary of subscriptions: a subscription speaks for one list id, a read problem
 * never becomes an expiry, a mass expiry waits for an operator, a 304 is no free pass, and an
 * unversioned list is ordered by its date. A real worker, the real CLI, a real HTTPS server
 * serving lists signed at test time; only kamaki and snf-mkimage are fakes.
 */
describe('subscriptions: what a list may do to the cloud is fixed by the site, not by the list', () => {
  let dir: string;
  let pki: TestPki;
  let publisherA: TestSigner;
  let publisherB: TestSigner;
  let intruder: TestSigner;
  let cert: SelfSignedCertificate;
  let lists: TestServer;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let worker: ServiceProcess;
  let connection: Connection;
  let client: Client;
  let conf: string;
  let taskQueue: string;
  const disks: Record<string, Disk> = {};
  const url: Record<'a' | 'b' | 'c', string> = { a: '', b: '', c: '' };
  let etags = 0;

  const entry = (id: string, version = '1') => ({
    'hv:image': {
      'dc:identifier': id,
      'dc:title': `Image ${id}`,
      'hv:uri': disks[id].url,
      'hv:size': String(disks[id].size),
      'hv:format': 'raw',
      'hv:version': version,
      'sl:checksum:sha512': disks[id].sha512,
    },
  });
  interface ListOptions {
    id: string;
    images: unknown[];
    version?: string;
    created?: string;
    expires?: string;
    signer: TestSigner;
  }
  const listJson = (o: ListOptions) =>
    JSON.stringify({
      'hv:imagelist': {
        'dc:identifier': o.id,
        'dc:title': `Trust list ${o.id}`,
        'dc:date:created': o.created ?? '2024-01-01T00:00:00Z',
        'dc:date:expires': o.expires ?? '2499-01-01T00:00:00Z',
        ...(o.version === undefined ? {} : { 'hv:version': o.version }),
        'hv:endorser': {
          'hv:x509': { 'dc:creator': 'test', 'hv:ca': pki.caDn, 'hv:dn': o.signer.dn, 'hv:email': 'a@b.c' },
        },
        'hv:images': o.images,
      },
    });
  /** The server publishes a new copy of a list (a new ETag), signed by `o.signer`. */
  const publish = async (which: 'a' | 'b' | 'c', o: ListOptions) => {
    lists.route(`/${which}.list`, { body: await pki.sign(listJson(o), o.signer), etag: `"v${++etags}"` });
  };
  const requestsOf = (which: 'a' | 'b' | 'c') => lists.requests.filter((r) => r.path.startsWith(`/${which}.list`));

  /** Every request for A's list since `before` asked If-None-Match with the ETag served (so the server answered 304). */
  const expectOnlyConditionalRequests = (before: number) => {
    const conditions = requestsOf('a')
      .slice(before)
      .map((q) => q.headers['if-none-match']);
    expect(conditions.length).toBeGreaterThan(0);
    expect(new Set(conditions)).toEqual(new Set([`"v${etags}"`]));
  };

  const cli = (args: string[], config = conf) =>
    runCli([...args, '--conf', config], {
      env: { TEMPORAL_TASK_QUEUE: taskQueue, NODE_EXTRA_CA_CERTS: cert.certPath },
      timeoutMs: 180_000,
    });
  const syncNow = (which: 'a' | 'b' | 'c', extra: string[] = []) =>
    cli(['sync-now', '--url', url[which], '--wait', ...extra]);
  /** list id:image id:public|private of every image of our lists in the cloud, sorted. */
  const cloudView = async () =>
    (await cloud.images())
      .filter((i) => !i.deleted_at)
      .map(
        (i) =>
          `${i.properties.VMCATCHER_IL_DC_IDENTIFIER}:${i.properties.VMCATCHER_DC_IDENTIFIER}:${i.is_public ? 'public' : 'private'}`,
      )
      .sort();
  const waitForCloud = async (expected: string[], timeoutMs = 120_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const view = await cloudView();
      if (JSON.stringify(view) === JSON.stringify([...expected].sort()) || Date.now() > deadline) return view;
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const subscriptionsConf = (a: { images?: string[]; endorser?: TestSigner } = {}) => {
    const endorser = (s: TestSigner) => `endorser { dn = "${s.dn}", ca = "${pki.caDn}" }`;
    const images = a.images ? `, images = [${a.images.map((i) => `"${i}"`).join(', ')}]` : '';
    // A year apart (schedule intervals are aligned to the epoch, jitter at most 15 min): no scheduled run lands amid the test's own.
    return `subscriptions = [
  { url = "${url.a}", every = 8760h, cloud = "e2e", ${endorser(a.endorser ?? publisherA)}${images} }
  { url = "${url.b}", every = 8760h, cloud = "e2e", ${endorser(publisherB)} }
  { url = "${url.c}", every = 8760h, cloud = "e2e", ${endorser(publisherA)} }
  { registry = "https://127.0.0.1:9", project = "egi_vm_images", every = 8760h, paused = true }
]`;
  };
  let base: string;
  const applyConf = async (name: string, a: Parameters<typeof subscriptionsConf>[0]) => {
    const file = path.join(dir, name);
    await writeFile(file, `${base}\n${subscriptionsConf(a)}\n`);
    const r = await cli(['subscriptions', 'apply'], file);
    expect(r.exitCode).toBe(0);
  };

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-subscription-trust-'));
    pki = await createTestPki('Subscription trust CA');
    [publisherA, publisherB, intruder] = await Promise.all([
      pki.issue('a.example.org'),
      pki.issue('b.example.org'),
      pki.issue('intruder.example.org'),
    ]);
    cert = await generateSelfSignedCertificate('localhost');
    lists = await startTestServer({ tls: cert, hostname: 'localhost' });
    for (const which of ['a', 'b', 'c'] as const) url[which] = lists.at(`/${which}.list`);
    for (const id of ['a1', 'a2', 'b1', 'b2', 'b3']) disks[id] = await servedDisk(dir, `${id}.raw`, 1, 256 * MiB);
    cloud = await fakeCloud(dir);
    taskQueue = uniqueTaskQueue('subscription-trust');
    conf = path.join(dir, 'application.conf');
    base = `worker {\n  workingFolder = "${dir}/work"\n  heartbeatTimeoutMs = 3000\n}\nsecurity { caPath = "${pki.caDir}" }\n${cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "e2e"')}`;
    await writeFile(conf, `${base}\n${subscriptionsConf()}\n`);
    await publish('a', { id: LIST_A, version: '1', images: [entry('a1'), entry('a2')], signer: publisherA });
    await publish('b', { id: LIST_B, version: '1', images: [entry('b1'), entry('b2')], signer: publisherB });
    worker = await startService(['worker', '--conf', conf], {
      env: { TEMPORAL_TASK_QUEUE: taskQueue, NODE_EXTRA_CA_CERTS: cert.certPath, ...cloud.env },
    });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
  }, 180_000);

  afterAll(async () => {
    await worker?.stop();
    if (dir)
      await runCli(['subscriptions', 'apply', '--conf', path.join(dir, 'none.conf')], {
        env: { TEMPORAL_TASK_QUEUE: taskQueue },
      }).catch(() => undefined);
    for (const disk of Object.values(disks)) await disk.server.close();
    await lists?.close();
    await connection?.close();
    await cert?.cleanup();
    await pki?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  test("B's list and A's list are each registered under their own id", async () => {
    await writeFile(path.join(dir, 'none.conf'), `${base}\nsubscriptions = []\n`);
    expect((await syncNow('b')).exitCode).toBe(0);
    expect((await syncNow('a')).exitCode).toBe(0);
    const expected = [`${LIST_A}:a1:public`, `${LIST_A}:a2:public`, `${LIST_B}:b1:public`, `${LIST_B}:b2:public`];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
    const listed = await cli(['subscriptions']);
    expect(listed.stdout).toContain(`list id: ${LIST_A} (first accepted)`);
    expect(listed.stdout).toContain(`list id: ${LIST_B} (first accepted)`);
  });

  test("A's endorser signs a list carrying B's id: refused (ImageListRejected), B's images untouched", async () => {
    const view = await cloudView();
    await publish('a', { id: LIST_B, version: '9', images: [entry('a1')], signer: publisherA });
    const r = await syncNow('a');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `image list ${url.a} refused: the list carries dc:identifier ${LIST_B}, but this URL speaks for list ${LIST_A}`,
    );
    expect(await cloudView()).toEqual(view);
    const listed = await cli(['subscriptions']);
    expect(listed.stdout).toMatch(/last run: .* FAILED: image list .* refused: the list carries dc:identifier/);
  });

  test("a subscription that never accepted a list is refused B's id (B's subscription synced it) and a registry project's id", async () => {
    const view = await cloudView();
    await publish('c', { id: LIST_B, version: '1', images: [entry('a1')], signer: publisherA });
    const stolen = await syncNow('c');
    expect(stolen.exitCode).toBe(1);
    expect(stolen.stderr).toContain(`list id ${LIST_B} belongs to another subscription (synced by sync:`);
    await publish('c', { id: REGISTRY_PROJECT_ID, version: '1', images: [entry('a1')], signer: publisherA });
    const registry = await syncNow('c');
    expect(registry.exitCode).toBe(1);
    expect(registry.stderr).toContain(
      `list id ${REGISTRY_PROJECT_ID} is the registry project https://127.0.0.1:9/egi_vm_images's`,
    );
    expect(await cloudView()).toEqual(view);
  });

  test('`images` narrowed: the next run reads the list again (no conditional request) and expires what left the selection', async () => {
    await publish('a', { id: LIST_A, version: '1', images: [entry('a1'), entry('a2')], signer: publisherA });
    expect((await syncNow('a')).exitCode).toBe(0);
    const unchanged = await syncNow('a');
    expect(unchanged.stdout).toContain('(not modified)');
    await applyConf('narrow.conf', { images: ['a1'] });
    const before = requestsOf('a').length;
    const r = await syncNow('a');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).not.toContain('(not modified)');
    expect(r.stdout).toContain('1 to expire: Image a2 1 (removed)');
    expect(
      requestsOf('a')
        .slice(before)
        .map((q) => q.headers['if-none-match']),
    ).toEqual([undefined]);
    const expected = [`${LIST_A}:a1:public`, `${LIST_A}:a2:private`, `${LIST_B}:b1:public`, `${LIST_B}:b2:public`];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
  });

  test('a list whose entries all fail validation expires nothing, changed or not modified; the entries are reported', async () => {
    const view = await cloudView();
    const broken = (id?: string) => ({
      'hv:image': { ...(id ? { 'dc:identifier': id } : {}), 'dc:title': 'broken', 'hv:size': 'not a size' },
    });
    await publish('a', { id: LIST_A, version: '2', images: [broken('a1'), broken()], signer: publisherA });
    const r = await syncNow('a');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('0 to expire');
    expect(r.stdout).toContain('2 invalid');
    expect(r.stdout).toContain('unread, kept: a1 (invalid entry');
    expect(r.stdout).toContain('the read is incomplete: nothing expired as removed');
    expect(await cloudView()).toEqual(view);
    // Unchanged (304): the accepted copy's invalid entries still keep their images.
    const again = await syncNow('a');
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('(not modified)');
    expect(again.stdout).toContain('0 to expire');
    expect(await cloudView()).toEqual(view);
  });

  test('a list without hv:version is ordered by dc:date:created: an older one than accepted last is refused', async () => {
    const newer = { id: LIST_A, created: '2025-06-01T00:00:00Z', images: [entry('a1')], signer: publisherA };
    await publish('a', newer);
    expect((await syncNow('a')).exitCode).toBe(0);
    await publish('a', { ...newer, created: '2025-01-01T00:00:00Z' });
    const r = await syncNow('a');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      'the list is dated 2025-01-01T00:00:00Z, before 2025-06-01T00:00:00Z, the list accepted last (dc:date:created',
    );
    await publish('a', newer);
    expect((await syncNow('a')).exitCode).toBe(0);
  });

  test('a 304 after the endorser was removed from the configuration is refused', async () => {
    const ok = await syncNow('a');
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toContain('(not modified)');
    await applyConf('other-endorser.conf', { images: ['a1'], endorser: intruder });
    try {
      const before = requestsOf('a').length;
      const r = await syncNow('a');
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`signer ${publisherA.dn} (CA ${pki.caDn}) is not an authorised endorser of this list`);
      expect(r.stderr).toContain('checked again: the list was not modified');
      expectOnlyConditionalRequests(before);
    } finally {
      await applyConf('narrow.conf', { images: ['a1'] });
    }
  });

  test("a 304 after the list's dc:date:expires is refused", async () => {
    // Expires in 30 s: the sync that accepts it takes a few seconds; the one after waits it out.
    const expires = new Date(Math.floor(Date.now() / 1000) * 1000 + 30_000);
    await publish('a', {
      id: LIST_A,
      created: '2025-07-01T00:00:00Z',
      expires: expires.toISOString().replace('.000Z', 'Z'), // dc:date:expires has no fraction of a second
      images: [entry('a1')],
      signer: publisherA,
    });
    expect((await syncNow('a')).exitCode).toBe(0);
    await new Promise((r) => setTimeout(r, Math.max(0, expires.getTime() - Date.now()) + 1000));
    const view = await cloudView();
    const before = requestsOf('a').length;
    const r = await syncNow('a');
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('refused: the list (not modified since) expired on');
    expectOnlyConditionalRequests(before);
    expect(await cloudView()).toEqual(view);
  });

  test('a sync that would expire most of the list stops before delivering; `sync-now --allow-mass-expiry` lets one run through', async () => {
    const view = await cloudView();
    await publish('b', { id: LIST_B, version: '2', images: [entry('b3')], signer: publisherB });
    const stopped = await syncNow('b');
    expect(stopped.exitCode).toBe(1);
    expect(stopped.stderr).toContain(
      `the sync of ${url.b} would expire 2 of the 2 images registered from ${LIST_B} (2 removed from the list), more than maxExpireFraction 0.5: stopped, nothing delivered`,
    );
    expect(await cloudView()).toEqual(view);
    const listed = await cli(['subscriptions']);
    expect(listed.stdout).toMatch(/last run: .* FAILED: the sync of .* would expire 2 of the 2 images/);

    const allowed = await syncNow('b', ['--allow-mass-expiry']);
    expect(allowed.exitCode).toBe(0);
    expect(allowed.stdout).toContain('1 to register: Image b3 1 (new)');
    expect(allowed.stdout).toContain('2 to expire: ');
    expect(allowed.stdout).toContain('Image b1 1 (removed)');
    expect(allowed.stdout).toContain('Image b2 1 (removed)');
    expect(allowed.stdout).toContain('mass expiry allowed (--allow-mass-expiry)');
    const expected = [
      ...view.filter((v) => v.startsWith(`${LIST_A}:`)),
      `${LIST_B}:b1:private`,
      `${LIST_B}:b2:private`,
      `${LIST_B}:b3:public`,
    ];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
    // The allowance was for that run: the schedule no longer carries it, and the next mass expiry stops again.
    const action = (await client.schedule.getHandle(subscriptionScheduleId(url.b)).describe()).action;
    expect(action.type === 'startWorkflow' && (action.args?.[0] as SyncImageListInput).allowMassExpiry).toBeFalsy();
    await publish('b', { id: LIST_B, version: '3', images: [], signer: publisherB });
    const again = await syncNow('b');
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toContain('would expire 1 of the 1 images registered');
  });
});
