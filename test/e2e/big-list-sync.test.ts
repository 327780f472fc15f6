import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { ImageEvent } from '../../core/event.js';
import { SA_IMAGE_ID } from '../../core/workflow-contract.js';
import { subscriptionScheduleId } from '../../subscriptions/schedules.js';
import {
  bigListImage,
  bigListJson,
  listEvents,
  seedRegisteredImages,
  signLargeList,
  type BigListImage,
} from '../support/big-list.js';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { historyPayloadSizes, runsMatching, type PayloadSize } from '../support/history-payloads.js';
import { generateSelfSignedCertificate, startTestServer } from '../support/http-server.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { createTestPki } from '../support/test-pki.js';
import { servedDisk } from '../support/throttled-file-server.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const LIST_ID = 'e2e-big-list';
const IMAGES = 5000;
const CHANGED = 50;
/** What a sync of the whole list may take on the reference machine (docs/operations.md, sizing); the test fails only at 5 ×. */
const BUDGET_MS = 30_000;
/** No payload of any history of the sync may be larger: far below the server's limits (2 MiB warning, 4 MiB error). */
const MAX_PAYLOAD = 256 * KiB;

/**
 * One subscribed list's site for a test: a test CA and its publisher, an HTTPS server for the
 * list, the fake cloud, and an application.conf subscribing to the list (synced by the test alone:
 * a yearly schedule, aligned to the epoch, never fires mid-test); the worker starts once the cloud
 * holds the list's images (`start`).
 */
async function listSite(name: string, security = '') {
  await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
  const dir = await mkdtemp(path.join(ROOT, 'tmp', `e2e-${name}-`));
  const pki = await createTestPki(`${name} CA`);
  const publisher = await pki.issue('appdb.example.org');
  const cert = await generateSelfSignedCertificate('localhost');
  const lists = await startTestServer({ tls: cert, hostname: 'localhost' });
  const listUrl = lists.at(`/${name}`);
  const cloud = await fakeCloud(dir);
  const taskQueue = uniqueTaskQueue(name.replace(/\W/g, '-'));
  const conf = path.join(dir, 'application.conf');
  const subscription = `{ url = "${listUrl}", every = 8760h, cloud = "e2e", endorser { dn = "${publisher.dn}", ca = "${pki.caDn}" } }`;
  await writeFile(
    conf,
    [
      `worker {\n  workingFolder = "${dir}/work"\n  heartbeatTimeoutMs = 3000\n}`,
      `security {\n  caPath = "${pki.caDir}"\n  ${security}\n}`,
      cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "e2e"'),
      `subscriptions = [ ${subscription} ]\n`,
    ].join('\n'),
  );
  const env = { TEMPORAL_TASK_QUEUE: taskQueue, NODE_EXTRA_CA_CERTS: cert.certPath };
  let worker: ServiceProcess | undefined;
  let connection: Connection | undefined;
  let client: Client | undefined;
  let etags = 0;
  return {
    dir,
    publisher,
    taskQueue,
    endorser: { dn: publisher.dn, ca: pki.caDn },
    client: () => client!,
    /** The server publishes a new copy of the list (a new ETag). */
    publish: (body: Buffer) => lists.route(`/${name}`, { body, etag: `"v${++etags}"` }),
    /** How many requests the list's server has answered. */
    requests: () => lists.requests.length,
    /** The cloud holds every event's image, registered by us; then the worker starts. */
    start: async (events: ImageEvent[]) => {
      await seedRegisteredImages(cloud.env.FAKE_SYNNEFO_STATE, await cloud.account(), events);
      worker = await startService(['worker', '--conf', conf], { env: { ...env, ...cloud.env } });
      connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
      client = new Client({ connection });
    },
    /** `sync-now --wait`, timed. */
    sync: async () => {
      const started = Date.now();
      const r = await runCli(['sync-now', '--url', listUrl, '--wait', '--conf', conf], {
        env,
        timeoutMs: 10 * BUDGET_MS,
      });
      return { ...r, ms: Date.now() - started };
    },
    /** The size of every payload in the histories of every workflow this site's worker ran. */
    payloads: async (): Promise<PayloadSize[]> => {
      const runs = await runsMatching(client!, `TaskQueue = '${taskQueue}'`);
      expect(runs.length).toBeGreaterThan(0);
      const sizes = await Promise.all(runs.map((r) => historyPayloadSizes(client!, r.workflowId, r.runId)));
      return sizes.flat();
    },
    stop: async () => {
      await worker?.stop();
      await client?.schedule
        .getHandle(subscriptionScheduleId(listUrl))
        .delete()
        .catch(() => undefined);
      await lists.close();
      await connection?.close();
      await cert.cleanup();
      await pki.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A subscribed list of 5,000 realistic entries, signed at test time, whose images the (fake)
 * Synnefo cloud holds already: the real worker and CLI sync it against a real Temporal server and
 * a real HTTPS server; the images are never downloaded (the 50 a new version changes are small
 * ones, served; what is checked of them is what the run delivered). What is checked: the sync's
 * duration (loosely: a test, not a benchmark — `npm run bench -- subscriptions` measures it) and,
 * exactly, that no payload in the history of any workflow the sync ran or started exceeds 256 KiB.
 */
describe('a subscribed list of 5,000 images', () => {
  let site: Awaited<ReturnType<typeof listSite>>;
  let small: Awaited<ReturnType<typeof servedDisk>>;
  let v1: BigListImage[];

  const publish = async (version: string, images: BigListImage[]) => {
    const json = bigListJson({ listId: LIST_ID, version, images, endorser: site.endorser });
    site.publish(await signLargeList(site.dir, json, site.publisher));
    return json;
  };
  /** Every payload over the bound in the histories of every workflow this test's worker ran. */
  const oversized = async (): Promise<PayloadSize[]> => (await site.payloads()).filter((s) => s.bytes > MAX_PAYLOAD);

  beforeAll(async () => {
    site = await listSite('big.list');
    small = await servedDisk(site.dir, 'small.raw', 1, 256 * MiB);
    v1 = Array.from({ length: IMAGES }, (_, n) => bigListImage(n));
    // Every image of v1 is ours in the cloud already, as a registration leaves it.
    await site.start(listEvents(await publish('1', v1)));
  }, 300_000);

  afterAll(async () => {
    await small?.server.close();
    await site?.stop();
  });

  test(
    'all registered already: the sync registers and expires nothing, within its budget, and no history payload exceeds 256 KiB',
    async () => {
      const r = await site.sync();
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toContain(`list ${LIST_ID} version 1`);
      expect(r.stdout).toContain(`0 to register; 0 to expire; ${IMAGES} unchanged`);
      expect(r.ms).toBeLessThan(5 * BUDGET_MS);
      expect(await oversized()).toEqual([]);
    },
    10 * BUDGET_MS,
  );

  test(
    'not modified: one conditional request, nothing delivered, from the bounded copy the run before carried',
    async () => {
      const before = site.requests();
      const r = await site.sync();
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toContain('(not modified)');
      expect(r.stdout).toContain(`0 to register; 0 to expire; ${IMAGES} unchanged`);
      expect(site.requests() - before).toBe(1);
      expect(r.ms).toBeLessThan(5 * BUDGET_MS);
      expect(await oversized()).toEqual([]);
    },
    10 * BUDGET_MS,
  );

  test(
    `v2 with ${CHANGED} entries changed (new revisions, small images): exactly those ${CHANGED} delivered, for registration (the revisions they replace stay until they are registered: the run after expires them, as test/e2e/subscriptions.test.ts shows), nothing else`,
    async () => {
      const changed = Array.from({ length: CHANGED }, (_, i) => i * 97);
      const v2 = [...v1];
      for (const n of changed)
        v2[n] = bigListImage(n, 2, { url: `${small.url}?image=${n}`, size: small.size, sha512: small.sha512 });
      await publish('2', v2);
      const r = await site.sync();
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toContain(`list ${LIST_ID} version 2`);
      expect(r.stdout).toContain(`${CHANGED} to register: `);
      // The old revisions stay offered until their successors are registered.
      expect(r.stdout).toContain('; 0 to expire; ');
      expect(r.stdout).toContain(`; ${IMAGES - CHANGED} unchanged`);
      for (const n of changed) {
        const title = v1[n]!.entry['hv:image']['dc:title']!;
        expect(r.stdout).toContain(`${title} ${v2[n]!.version} (updated)`);
      }
      // What the run started: one image revision workflow per event, one for each changed image, none for any other.
      const client = site.client();
      const revisions = `TaskQueue = '${site.taskQueue}' AND WorkflowType = 'imageRevision'`;
      const started = await runsMatching(client, revisions);
      expect(started).toHaveLength(CHANGED);
      const images: string[] = [];
      for (const run of started) {
        const described = await client.workflow.getHandle(run.workflowId, run.runId).describe();
        images.push(String(described.typedSearchAttributes.get(SA_IMAGE_ID)));
      }
      expect(images.sort()).toEqual(changed.map((n) => v1[n]!.id).sort());
      expect(await oversized()).toEqual([]);
    },
    10 * BUDGET_MS,
  );
});

/**
 * The largest list a site takes (`security.maxImageListBytes`, 16 MiB by default: about 13,000
 * such entries), all registered: it syncs, whatever the size of what it carries; one byte more is
 * refused naming the limit. Never a payload-size failure from the Temporal server.
 */
describe('a subscribed list at security.maxImageListBytes', () => {
  const LIMIT = 16 * MiB;
  /** Temporal warns about payloads over 2 MiB (and refuses them over 4 MiB). */
  const SERVER_WARNING = 2 * MiB;
  let site: Awaited<ReturnType<typeof listSite>>;
  let atLimit: Buffer;
  let overLimit: Buffer;
  let images = 0;

  beforeAll(async () => {
    site = await listSite('max.list', `maxImageListBytes = ${LIMIT}`);
    const { dir, publisher, endorser } = site;
    // As many entries as fit, then the list's description padded so the signed list is exactly the limit.
    const entrySize = Buffer.byteLength(JSON.stringify(bigListImage(0).entry)) + 1;
    const all = Array.from({ length: Math.floor(LIMIT / entrySize) }, (_, n) => bigListImage(n));
    const json = (padding: number) =>
      bigListJson({ listId: 'e2e-max-list', version: '1', images: all, endorser }).replace(
        '"dc:description":"',
        `"dc:description":"${'.'.repeat(padding)}`,
      );
    // The signature's own bytes (the MIME parts, the PKCS#7 blob), then as many entries as leave room for it.
    const overhead = (await signLargeList(dir, json(0), publisher)).length - Buffer.byteLength(json(0));
    let excess = Buffer.byteLength(json(0)) + overhead - (LIMIT - KiB);
    while (excess > 0) excess -= Buffer.byteLength(JSON.stringify(all.pop()!.entry)) + 1;
    images = all.length;
    let padding = LIMIT - overhead - Buffer.byteLength(json(0));
    for (let attempt = 0; attempt < 4; attempt++) {
      atLimit = await signLargeList(dir, json(padding), publisher);
      if (atLimit.length === LIMIT) break;
      padding += LIMIT - atLimit.length;
    }
    expect(atLimit.length).toBe(LIMIT);
    overLimit = await signLargeList(dir, json(padding + 1), publisher);
    expect(overLimit.length).toBe(LIMIT + 1);
    await site.start(listEvents(json(padding)));
  }, 600_000);

  afterAll(async () => {
    await site?.stop();
  });

  test(
    'a signed list of exactly the limit, all registered, syncs; no payload of its run comes near the server’s limits',
    async () => {
      site.publish(atLimit);
      const r = await site.sync();
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toContain(`0 to register; 0 to expire; ${images} unchanged`);
      const sizes = await site.payloads();
      expect(sizes.filter((s) => s.bytes > SERVER_WARNING)).toEqual([]);
    },
    10 * BUDGET_MS,
  );

  test(
    'one byte more is refused, naming security.maxImageListBytes',
    async () => {
      site.publish(overLimit);
      const r = await site.sync();
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`the limit is ${LIMIT} (security.maxImageListBytes)`);
    },
    10 * BUDGET_MS,
  );
});
