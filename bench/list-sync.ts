/**
 * A subscribed image list at scale: 5,000 realistic entries, signed, served over HTTPS; the fake
 * Synnefo cloud already holds all of them (seeded into its state file, as test/e2e/big-list-sync
 * does). A real worker process and the Temporal dev server run each sync as `sync-now --wait`
 * starts it. Measured: the run with the list read whole (a new copy, nothing to do), the run
 * answered 304, and a run where 50 entries changed (its 50 registrations and the 50 revisions they
 * replace delivered; the registrations themselves go on after the run, untimed, and the next
 * repeat waits until every workflow the run started has closed, so each run syncs against a
 * settled cloud); and the largest payload any of those runs' histories holds.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { parseConfig } from '../core/config.js';
import { connectTemporal } from '../core/temporal-client.js';
import type { SyncImageListResult } from '../core/workflow-contract.js';
import {
  bigListImage,
  bigListJson,
  listEvents,
  seedRegisteredImages,
  signLargeList,
  type BigListImage,
} from '../test/support/big-list.js';
import { runCli } from '../test/support/cli.js';
import { fakeCloud } from '../test/support/fake-cloud.js';
import { historyPayloadSizes, runsMatching } from '../test/support/history-payloads.js';
import { generateSelfSignedCertificate, startTestServer } from '../test/support/http-server.js';
import { createTestPki } from '../test/support/test-pki.js';
import { servedDisk } from '../test/support/throttled-file-server.js';
import { BENCH_TMP, MiB, REPEATS, log, median, round, stopAll, type BenchResult } from './lib.js';
import { startSnf, startTemporal, type Proc } from './services.js';

const IMAGES = Number(process.env.SNF_VMCATCHER_BENCH_LIST_IMAGES ?? 5000);
const CHANGED = 50;
const LIST_ID = 'bench-big-list';
const KiB = 1024;
/** The budget of a sync of the whole list, all registered (docs/operations.md, sizing). */
const BUDGET_S = 30;
/** How long the registrations a run started may take to close before the benchmark gives up. */
const SETTLE_TIMEOUT_MS = 20 * 60_000;

/**
 * Waits until every workflow a sync run started has closed: each registration and expiry its
 * summary names (once its image revision workflow has started it), and that image revision
 * workflow (asked every 2 s, so that no call is left waiting when the benchmark stops). Throws when one did not complete (the cloud would not be
 * what the next run expects), when they are not closed within SETTLE_TIMEOUT_MS, or when the
 * summary does not name them all.
 */
async function settled(client: Client, run: { workflowId: string; runId: string }): Promise<number> {
  const started = Date.now();
  const { summary } = (await client.workflow.getHandle(run.workflowId, run.runId).result()) as SyncImageListResult;
  const named = [...summary.registered, ...summary.expired];
  if (summary.counts && summary.counts.registered + summary.counts.expired > named.length)
    throw new Error(`the run ${run.workflowId} started more workflows than its summary names: cannot wait for them`);
  const open = new Set<string>();
  for (const image of named) {
    if (!image.workflowId) throw new Error(`the run ${run.workflowId} names ${image.imageId} without its workflow`);
    open.add(image.workflowId);
  }
  const failed: string[] = [];
  while (open.size > 0) {
    if (Date.now() - started > SETTLE_TIMEOUT_MS)
      throw new Error(`${open.size} workflows ${run.workflowId} started were still open after ${SETTLE_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    for (const workflowId of [...open]) {
      // Its image revision workflow starts it once it runs: not found yet is still to come.
      const child = await client.workflow
        .getHandle(workflowId)
        .describe()
        .catch((err: unknown) => {
          if (err instanceof WorkflowNotFoundError) return undefined;
          throw err;
        });
      if (!child || child.status.name === 'RUNNING') continue;
      const parent = child.parentExecution?.workflowId
        ? await client.workflow.getHandle(child.parentExecution.workflowId).describe()
        : undefined;
      if (parent?.status.name === 'RUNNING') continue;
      open.delete(workflowId);
      for (const closed of [child, parent])
        if (closed && closed.status.name !== 'COMPLETED') failed.push(`${closed.workflowId} ${closed.status.name}`);
    }
  }
  if (failed.length > 0)
    throw new Error(
      `of the workflows ${run.workflowId} started, ${failed.length} did not complete: ${failed.join(', ')}`,
    );
  return Date.now() - started;
}

export async function benchListSync(): Promise<BenchResult> {
  const dir = path.join(BENCH_TMP, 'list-sync');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const notes: string[] = [
    `Load average when it started: ${os
      .loadavg()
      .map((l) => round(l, 1))
      .join(', ')} (1, 5, 15 min) on ${os.cpus().length} cores.`,
  ];
  const pki = await createTestPki('Bench list CA');
  const publisher = await pki.issue('appdb.example.org');
  const cert = await generateSelfSignedCertificate('localhost');
  const lists = await startTestServer({ tls: cert, hostname: 'localhost' });
  const small = await servedDisk(dir, 'small.raw', 1, 256 * MiB);
  const cloud = await fakeCloud(dir, 'bench');
  const taskQueue = 'bench-list-sync';
  const listUrl = lists.at('/big.list');
  const conf = path.join(dir, 'application.conf');
  const subscription = `{ url = "${listUrl}", every = 8760h, cloud = "bench", endorser { dn = "${publisher.dn}", ca = "${pki.caDn}" } }`;
  await writeFile(
    conf,
    `worker { workingFolder = "${dir}/work" }\nsecurity { caPath = "${pki.caDir}" }\n${cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "bench"')}\nsubscriptions = [ ${subscription} ]\n`,
  );
  let etags = 0;
  let listBytes = 0;
  const publish = async (version: string, images: BigListImage[]) => {
    const json = bigListJson({ listId: LIST_ID, version, images, endorser: { dn: publisher.dn, ca: pki.caDn } });
    const body = await signLargeList(dir, json, publisher);
    listBytes = body.length;
    lists.route('/big.list', { body, etag: `"v${++etags}"` });
    return json;
  };
  let current = Array.from({ length: IMAGES }, (_, n) => bigListImage(n));
  let version = 1;
  const json = await publish(String(version), current);
  await seedRegisteredImages(cloud.env.FAKE_SYNNEFO_STATE, await cloud.account(), listEvents(json));
  notes.push(
    `The list: ${IMAGES} entries, ${round(listBytes / MiB, 2)} MiB signed (${round(Buffer.byteLength(json) / IMAGES, 0)} bytes of JSON an entry).`,
  );

  const temporal = await startTemporal(path.join(dir, 'temporal'));
  let worker: Proc | undefined;
  const config = parseConfig({ temporal: { address: temporal.address, taskQueue } }, 'bench');
  const { client, connection } = await connectTemporal(config.temporal);
  const env = {
    TEMPORAL_ADDRESS: temporal.address,
    TEMPORAL_TASK_QUEUE: taskQueue,
    NODE_EXTRA_CA_CERTS: cert.certPath,
  };
  /** `sync-now --wait`, which must succeed and say every one of `expected`. */
  const sync = async (...expected: string[]) => {
    const started = Date.now();
    const r = await runCli(['sync-now', '--url', listUrl, '--wait', '--conf', conf], { env, timeoutMs: 600_000 });
    const wallMs = Date.now() - started;
    const missing = expected.find((text) => !r.stdout.includes(text));
    if (r.exitCode !== 0 || missing !== undefined)
      throw new Error(`sync-now: expected "${missing ?? ''}", got exit ${r.exitCode}: ${r.stdout}\n${r.stderr}`);
    // The run itself (start to close, as the server recorded it): the CLI's own start-up left out.
    let last: { workflowId: string; runId: string; start: number } | undefined;
    for await (const run of client.workflow.list({ query: `WorkflowType = 'syncImageList'` }))
      if (!last || run.startTime.getTime() > last.start)
        last = { workflowId: run.workflowId, runId: run.runId, start: run.startTime.getTime() };
    const described = await client.workflow.getHandle(last!.workflowId, last!.runId).describe();
    const runMs = described.closeTime!.getTime() - described.startTime.getTime();
    return { wallMs, runMs, workflowId: last!.workflowId, runId: last!.runId };
  };

  const cases: Record<string, Array<{ wallMs: number; runMs: number }>> = { read: [], notModified: [], changed: [] };
  const runs: Array<{ workflowId: string; runId: string }> = [];
  try {
    worker = await startSnf(['worker', '--conf', conf], { ...env, ...cloud.env }, /worker started/);
    // Warm-up: the first run (worker caches, the first workflow task), not counted.
    runs.push(await sync(`0 to register; 0 to expire; ${IMAGES} unchanged`));
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      // A new copy of the same images: read whole and verified, nothing to deliver.
      await publish(String(++version), current);
      const read = await sync(`0 to register; 0 to expire; ${IMAGES} unchanged`);
      cases.read!.push(read);
      const same = await sync('(not modified)');
      cases.notModified!.push(same);
      runs.push(read, same);
      log(`repeat ${repeat + 1}: read whole ${read.runMs} ms, 304 ${same.runMs} ms (runs)`);
    }
    // Last, as they start registrations that go on after their run (small images, really
    // registered, untimed): 50 entries change (new revisions), 50 registrations and the 50
    // revisions they replace delivered. Before the next repeat, every workflow the run started
    // has closed: each run finds the cloud as the run before left it.
    const settling: number[] = [];
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      const revision = repeat + 2;
      const changed = new Set(Array.from({ length: CHANGED }, (_, i) => (i * 97 + repeat * 13) % IMAGES));
      current = current.map((image, n) =>
        changed.has(n)
          ? bigListImage(n, revision, {
              url: `${small.url}?image=${n}-${revision}`,
              size: small.size,
              sha512: small.sha512,
            })
          : image,
      );
      await publish(String(++version), current);
      // A changed image is one event: its old revision is expired by the first run that finds the
      // new one registered, i.e. the next repeat expires the revisions this one replaced.
      const delivered = await sync(
        `; ${CHANGED} to register: `,
        repeat === 0 ? '; 0 to expire; ' : `; ${CHANGED} to expire: `,
        `; ${IMAGES - CHANGED} unchanged`,
      );
      cases.changed!.push(delivered);
      runs.push(delivered);
      settling.push(await settled(client, delivered));
      log(
        `repeat ${repeat + 1}: ${CHANGED} changed ${delivered.runMs} ms (run); its workflows closed ${settling.at(-1)} ms after it`,
      );
    }
    notes.push(
      `${CHANGED} entries changed: the workflows each run started (its ${CHANGED} registrations of small images, really downloaded and registered, and from the second repeat on the ${CHANGED} expiries of the revisions the repeat before replaced) closed ${settling.map((ms) => round(ms / 1000, 1)).join(' s, ')} s after the run; the next repeat started only then.`,
    );
    let largest = { bytes: 0, where: '' };
    for (const run of await runsMatching(client, `TaskQueue = '${taskQueue}'`)) {
      for (const s of await historyPayloadSizes(client, run.workflowId, run.runId))
        if (s.bytes > largest.bytes) largest = { bytes: s.bytes, where: `${run.workflowId} ${s.where}` };
    }
    notes.push(
      `Largest payload in any history of the runs (syncs, image revisions, registrations): ${round(largest.bytes / KiB, 1)} KiB (${largest.where}).`,
    );
    const rows = (
      [
        ['a new copy of the list, all registered (read whole, nothing delivered)', cases.read!],
        ['not modified (304), all registered', cases.notModified!],
        [
          `${CHANGED} entries changed (${CHANGED} registrations delivered; from the second repeat on, also the ${CHANGED} expiries of the revisions the repeat before replaced)`,
          cases.changed!,
        ],
      ] as const
    ).map(([run, times]) => ({
      run,
      'median run s': round(median(times.map((t) => t.runMs)) / 1000, 2),
      'max run s': round(Math.max(...times.map((t) => t.runMs)) / 1000, 2),
      'median sync-now s': round(median(times.map((t) => t.wallMs)) / 1000, 2),
    }));
    return {
      name: 'subscriptions',
      title: `Image list sync: ${IMAGES} images, all registered`,
      method: `A real worker and the Temporal dev server; the list (${IMAGES} AppDB-like entries, S/MIME-signed by a test CA) served over HTTPS on 127.0.0.1; the fake Synnefo cloud holding every image already. 'run' is the sync workflow's start to close as the server recorded it; 'sync-now' adds the CLI's start-up and its wait. Median and max of ${REPEATS} repeats after a warm-up run.`,
      rows,
      targets: [
        {
          target: `a sync of ${IMAGES} images all registered ≤ ${BUDGET_S} s`,
          measured: `${rows[0]!['max run s']} s (max of the read-whole runs)`,
          met: Number(rows[0]!['max run s']) <= BUDGET_S,
        },
        {
          target: 'no payload in any history > 256 KiB',
          measured: `largest ${round(largest.bytes / KiB, 1)} KiB`,
          met: largest.bytes <= 256 * KiB,
        },
      ],
      notes,
      raw: { ...cases, largestPayloadBytes: largest.bytes, listBytes },
    };
  } finally {
    await stopAll([
      () => worker?.stop(),
      () => connection.close(),
      () => temporal.stop(),
      () => small.server.close(),
      () => lists.close(),
      () => cert.cleanup(),
      () => pki.cleanup(),
    ]);
  }
}
