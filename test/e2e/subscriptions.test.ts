import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, ScheduleNotFoundError } from '@temporalio/client';
import { execa } from 'execa';
import { parseConfig } from '../../core/config.js';
import { ImageEventSchema } from '../../core/event.js';
import { startWorkflowForEvent } from '../../core/starter.js';
import { registrationSite } from '../../clouds/index.js';
import { subscriptionScheduleId } from '../../subscriptions/schedules.js';
import { ROOT, runCli } from '../support/cli.js';
import { FAKE_KAMAKI, fakeCloud } from '../support/fake-cloud.js';
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
const LIST_ID = 'e2e-subscribed-list';

type Disk = Awaited<ReturnType<typeof servedDisk>>;

/**
 * The service follows an image list itself. A real worker (which makes the schedules
 * match application.conf), the real CLI, a real HTTPS server serving lists signed at test time
 * by a test CA, real downloads; only kamaki and snf-mkimage are fakes.
 */
describe('subscriptions: a subscribed list, synced on a Temporal Schedule, keeps the cloud in step', () => {
  let dir: string;
  let pki: TestPki;
  let publisher: TestSigner;
  let intruder: TestSigner;
  let cert: SelfSignedCertificate;
  let lists: TestServer;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let worker: ServiceProcess;
  let connection: Connection;
  let client: Client;
  let conf: string;
  let taskQueue: string;
  let workerEnv: Record<string, string>;
  const disks: Record<string, Disk> = {};
  let listUrl: string;
  let etags = 0;

  const entry = (id: string, disk: Disk, version: string) => ({
    'hv:image': {
      'dc:identifier': id,
      'dc:title': `Image ${id}`,
      'hv:uri': disk.url,
      'hv:size': String(disk.size),
      'hv:format': 'raw',
      'hv:version': version,
      'sl:checksum:sha512': disk.sha512,
    },
  });
  const listJson = (version: string, images: unknown[], expires = '2499-01-01T00:00:00Z', signer = publisher) =>
    JSON.stringify({
      'hv:imagelist': {
        'dc:identifier': LIST_ID,
        'dc:title': 'E2E subscribed list',
        'dc:date:created': '2024-01-01T00:00:00Z',
        'dc:date:expires': expires,
        'hv:version': version,
        'hv:endorser': {
          'hv:x509': { 'dc:creator': 'test', 'hv:ca': pki.caDn, 'hv:dn': signer.dn, 'hv:email': 'a@b.c' },
        },
        'hv:images': images,
      },
    });
  /** The server publishes a new copy of the list (a new ETag). */
  const publish = (body: Buffer, opts: { delayMs?: number } = {}) => {
    lists.route('/image.list', { body, etag: `"v${++etags}"`, delayMs: opts.delayMs });
  };
  const signed = (json: string, signer = publisher) => pki.sign(json, signer);

  const cli = (args: string[]) =>
    runCli([...args, '--conf', conf], {
      env: { TEMPORAL_TASK_QUEUE: taskQueue, NODE_EXTRA_CA_CERTS: cert.certPath },
      timeoutMs: 180_000,
    });
  const syncNow = () => cli(['sync-now', '--url', listUrl, '--wait']);
  const ours = async () =>
    (await cloud.images()).filter((i) => i.properties.VMCATCHER_IL_DC_IDENTIFIER === LIST_ID && !i.deleted_at);
  /** image id → [revision, public] of every image of the list in the cloud, sorted. */
  const cloudView = async () =>
    (await ours())
      .map(
        (i) =>
          `${i.properties.VMCATCHER_DC_IDENTIFIER}:${i.properties.VMCATCHER_EVENT_SL_CHECKSUM_SHA512?.slice(0, 8)}:${i.is_public ? 'public' : 'private'}`,
      )
      .sort();
  const rev = (id: string) => `${id}:${disks[id].sha512.slice(0, 8)}`;
  const waitForCloud = async (expected: string[], timeoutMs = 120_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const view = await cloudView();
      if (JSON.stringify(view) === JSON.stringify([...expected].sort()) || Date.now() > deadline) return view;
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const startWorker = async () => startService(['worker', '--conf', conf], { env: workerEnv });

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-subscriptions-'));
    pki = await createTestPki('Subscriptions CA');
    [publisher, intruder] = await Promise.all([pki.issue('appdb.example.org'), pki.issue('intruder.example.org')]);
    cert = await generateSelfSignedCertificate('localhost');
    lists = await startTestServer({ tls: cert, hostname: 'localhost' });
    listUrl = lists.at('/image.list');
    for (const [id, mib] of [
      ['a', 2],
      ['a2', 2],
      ['b', 2],
      ['c', 2],
      ['d', 2],
      ['e', 2],
      ['f', 2],
    ] as const) {
      disks[id] = await servedDisk(dir, `${id}.raw`, mib, 256 * MiB);
    }
    cloud = await fakeCloud(dir);
    taskQueue = uniqueTaskQueue('subscriptions');
    conf = path.join(dir, 'application.conf');
    // Synced by the test alone: a yearly schedule (intervals are aligned to the epoch) never fires mid-test.
    const subscription = `{ url = "${listUrl}", every = 8760h, cloud = "e2e", endorser { dn = "${publisher.dn}", ca = "${pki.caDn}" } }`;
    const base = `worker {\n  workingFolder = "${dir}/work"\n  heartbeatTimeoutMs = 3000\n}\nsecurity { caPath = "${pki.caDir}" }\n${cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "e2e"')}`;
    await writeFile(conf, `${base}\nsubscriptions = [ ${subscription} ]\n`);
    await writeFile(`${conf}.without`, `${base}\nsubscriptions = []\n`);
    workerEnv = { TEMPORAL_TASK_QUEUE: taskQueue, NODE_EXTRA_CA_CERTS: cert.certPath, ...cloud.env };
    publish(
      await signed(listJson('1', [entry('a', disks.a, '1'), entry('b', disks.b, '1'), entry('c', disks.c, '1')])),
    );
    worker = await startWorker();
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
  }, 180_000);

  afterAll(async () => {
    await worker?.stop();
    await client?.schedule
      .getHandle(subscriptionScheduleId(listUrl))
      .delete()
      .catch(() => undefined);
    for (const disk of Object.values(disks)) await disk.server.close();
    await lists?.close();
    await connection?.close();
    await cert?.cleanup();
    await pki?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  test('the worker made a schedule for the subscription of application.conf; `subscriptions` lists it', async () => {
    const description = await client.schedule.getHandle(subscriptionScheduleId(listUrl)).describe();
    expect(description.state.paused).toBe(false);
    const r = await cli(['subscriptions']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`${listUrl}  [config] every 525600 min`);
    expect(r.stdout).toMatch(/next run: \d{4}-/);
  });

  test("first sync registers the list's 3 images", async () => {
    const r = await syncNow();
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('3 to register: Image a 1 (new), Image b 1 (new), Image c 1 (new)');
    expect(await waitForCloud([`${rev('a')}:public`, `${rev('b')}:public`, `${rev('c')}:public`])).toEqual(
      [`${rev('a')}:public`, `${rev('b')}:public`, `${rev('c')}:public`].sort(),
    );
  });

  test('v2 (a new revision of a, c removed, d added): the new revision and d registered, c expired, b untouched; the next run expires the old revision once the new one is registered', async () => {
    const bBefore = (await ours()).find((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'b');
    // a's new revision is served from another file: a new checksum and version.
    publish(
      await signed(listJson('2', [entry('a', disks.a2, '2'), entry('b', disks.b, '1'), entry('d', disks.d, '1')])),
    );
    const r = await syncNow();
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('2 to register: Image a 2 (updated), Image d 1 (new)');
    // One event for a: its old revision stays offered until the new one is registered.
    expect(r.stdout).toContain('1 to expire: Image c 1 (removed)');
    expect(r.stdout).toContain('1 unchanged');
    const a2 = `a:${disks.a2.sha512.slice(0, 8)}`;
    const meanwhile = [
      `${a2}:public`,
      `${rev('a')}:public`,
      `${rev('b')}:public`,
      `${rev('c')}:private`,
      `${rev('d')}:public`,
    ];
    expect(await waitForCloud(meanwhile)).toEqual(meanwhile.sort());
    const next = await syncNow();
    expect(next.exitCode).toBe(0);
    expect(next.stdout).toContain('0 to register; 1 to expire: Image a 1 (old-revision); 3 unchanged');
    const expected = [
      `${a2}:public`,
      `${rev('a')}:private`,
      `${rev('b')}:public`,
      `${rev('c')}:private`,
      `${rev('d')}:public`,
    ];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
    const bAfter = (await ours()).find((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'b');
    expect(bAfter).toEqual(bBefore);
  });

  test('an unchanged list costs one conditional request (304) and no registration', async () => {
    const before = lists.requests.length;
    const view = await cloudView();
    const r = await syncNow();
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('(not modified)');
    expect(r.stdout).toContain('0 to register; 0 to expire; 3 unchanged');
    const requests = lists.requests.slice(before);
    expect(requests).toHaveLength(1);
    expect(requests[0].headers['if-none-match']).toBe(`"v${etags}"`);
    expect(await cloudView()).toEqual(view);
  });

  test.each([
    [
      'v3 tampered after signing',
      async () =>
        Buffer.from(
          (await signed(listJson('3', []))).toString('utf8').replace('E2E subscribed list', 'E2E subscribed lisT'),
        ),
      /signature|verif/i,
    ],
    [
      'v4 signed by a signer not authorised for this subscription',
      async () => signed(listJson('4', [], undefined, intruder), intruder),
      /not an authorised endorser/,
    ],
    ['v5 expired', async () => signed(listJson('5', [], '2020-01-01T00:00:00Z')), /expired/],
  ])('%s: refused, the cloud unchanged, the reason visible in `subscriptions`', async (_name, body, reason) => {
    const view = await cloudView();
    publish(await body());
    const r = await syncNow();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(reason);
    expect(await cloudView()).toEqual(view);
    const listed = await cli(['subscriptions']);
    expect(listed.stdout).toMatch(/last run: .* FAILED: image list .* refused/);
    expect(listed.stdout).toMatch(reason);
  });

  test('an image deleted from the cloud by hand is back after the next sync (v2 again: not modified, reconciled with the cloud)', async () => {
    lists.route('/image.list', {
      body: await signed(
        listJson('2', [entry('a', disks.a2, '2'), entry('b', disks.b, '1'), entry('d', disks.d, '1')]),
      ),
      etag: '"v2"',
    });
    const b = (await ours()).find((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'b')!;
    await execa(FAKE_KAMAKI, ['image', 'unregister', b.id, '--cloud', 'e2e'], { env: cloud.env });
    expect((await cloudView()).some((v) => v.startsWith('b:'))).toBe(false);
    const r = await syncNow();
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('(not modified)');
    expect(r.stdout).toContain('1 to register: Image b 1 (missing-from-cloud)');
    expect(
      (
        await waitForCloud([
          `a:${disks.a2.sha512.slice(0, 8)}:public`,
          `${rev('a')}:private`,
          `${rev('b')}:public`,
          `${rev('c')}:private`,
          `${rev('d')}:public`,
        ])
      ).filter((v) => v.startsWith('b:')),
    ).toEqual([`${rev('b')}:public`]);
  });

  test('the same image through the vmcatcher hook and through the subscription is registered once', async () => {
    const config = parseConfig({ temporal: { taskQueue }, synnefo: { cloud: 'e2e' } }, 'test');
    const hookEvent = ImageEventSchema.parse({
      origin: 'vmcatcher',
      type: 'AvailablePostfix',
      imageListId: LIST_ID,
      imageId: 'e',
      uri: disks.e.url,
      checksumSha512: disks.e.sha512,
      format: 'raw',
      version: '1',
      title: 'Image e',
    });
    const hooked = await startWorkflowForEvent(client, config, hookEvent, {}, registrationSite(config));
    publish(
      await signed(
        listJson('6', [
          entry('a', disks.a2, '2'),
          entry('b', disks.b, '1'),
          entry('d', disks.d, '1'),
          entry('e', disks.e, '1'),
        ]),
      ),
    );
    const r = await syncNow();
    expect(r.exitCode).toBe(0);
    await hooked.handle!.result();
    await waitForCloud([
      `a:${disks.a2.sha512.slice(0, 8)}:public`,
      `${rev('a')}:private`,
      `${rev('b')}:public`,
      `${rev('c')}:private`,
      `${rev('d')}:public`,
      `${rev('e')}:public`,
    ]);
    expect((await ours()).filter((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'e')).toHaveLength(1);
    expect(disks.e.server.served.filter((s) => s.status === 200)).toHaveLength(1);
  });

  test('the worker SIGKILLed mid-sync: the sync completes after the restart, nothing registered twice', async () => {
    // The list server answers slowly, so the sync is reading the list when the worker dies.
    publish(
      await signed(
        listJson('7', [
          entry('a', disks.a2, '2'),
          entry('b', disks.b, '1'),
          entry('d', disks.d, '1'),
          entry('e', disks.e, '1'),
          entry('f', disks.f, '1'),
        ]),
      ),
      { delayMs: 4000 },
    );
    const before = lists.requests.length;
    const triggered = await cli(['sync-now', '--url', listUrl]);
    expect(triggered.exitCode).toBe(0);
    const deadline = Date.now() + 30_000;
    while (lists.requests.length === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(lists.requests.length).toBeGreaterThan(before);
    await worker.kill();
    worker = await startWorker();
    const f = await waitForCloud([
      `a:${disks.a2.sha512.slice(0, 8)}:public`,
      `${rev('a')}:private`,
      `${rev('b')}:public`,
      `${rev('c')}:private`,
      `${rev('d')}:public`,
      `${rev('e')}:public`,
      `${rev('f')}:public`,
    ]);
    expect(f.filter((v) => v.startsWith('f:'))).toEqual([`${rev('f')}:public`]);
    expect((await ours()).filter((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'f')).toHaveLength(1);
    const listed = await cli(['subscriptions']);
    expect(listed.stdout).toMatch(/last run: .* COMPLETED/);
    expect(listed.stdout).toContain('Image f 1 (new)');
  });

  test('removing the subscription from application.conf removes its schedule (`subscriptions apply`)', async () => {
    const r = await runCli(['subscriptions', 'apply', '--conf', `${conf}.without`], {
      env: { TEMPORAL_TASK_QUEUE: taskQueue },
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`deleted ${subscriptionScheduleId(listUrl)}`);
    await expect(client.schedule.getHandle(subscriptionScheduleId(listUrl)).describe()).rejects.toBeInstanceOf(
      ScheduleNotFoundError,
    );
  });
});
