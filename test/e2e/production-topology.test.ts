import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, type WorkflowExecutionInfo } from '@temporalio/client';
import { execa } from 'execa';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { publishBodies, queueDepth, waitFor } from '../support/bridge.js';
import {
  ensureProductionTemporalBuilt,
  PRODUCTION_BUILD_TIMEOUT_MS,
  startProductionTemporal,
  startWebUi,
  type ProductionTemporal,
} from '../support/production-temporal.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { SA_IMAGE_ID, SA_STAGE } from '../../core/workflow-contract.js';
import { servedDisk, startThrottledFileServer } from '../support/throttled-file-server.js';

const IMAGES = 50;
/** Every download takes ≈ 2 s, so a host always has downloads in flight when it is killed. */
const IMAGE_MIB = 2;
const RATE = 1024 * 1024;
/** Published before the server restart; the rest (and some repeats) while it is down. */
const FIRST_BATCH = 25;
const REPEATS = 5;

/**
 * The production topology, for real. The Temporal server v1.29.1 on PostgreSQL (set up
 * by docker/temporal/, as compose runs it), two worker processes acting as two hosts (their own
 * host task queues and working folders), the bridge (`dequeue --server`) and RabbitMQ. Fifty
 * vmcatcher events go through the queue; the server is restarted while the bridge is still
 * ingesting them, one host is SIGKILLed for good in the middle of its downloads, and every image
 * ends up registered once, answered for by PostgreSQL's visibility store.
 */
describe('the production topology: PostgreSQL-backed Temporal server, two worker hosts, the bridge', () => {
  const topology = uniqueTopology('topology');
  const listId = `topology-list-${Math.random().toString(16).slice(2, 10)}`;
  const taskQueue = uniqueTaskQueue('topology');
  let dir: string;
  let temporal: ProductionTemporal;
  let connection: Connection;
  const services: ServiceProcess[] = [];
  const servers: Array<Awaited<ReturnType<typeof startThrottledFileServer>>> = [];
  let webUi: Awaited<ReturnType<typeof startWebUi>> | undefined;
  /** How long the server took to set up its databases and start, in seconds (for the summary). */
  let serverStartS = 0;

  // npm test's set-up does not build the production server (CI's does): built here if missing.
  beforeAll(ensureProductionTemporalBuilt, PRODUCTION_BUILD_TIMEOUT_MS);

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-topology-'));
    const t0 = Date.now();
    temporal = await startProductionTemporal('snf_e2e_topology', path.join(dir, 'logs'));
    serverStartS = Math.round((Date.now() - t0) / 1000);
    connection = await Connection.connect({ address: temporal.address });
  }, 240_000);

  afterAll(async () => {
    for (const s of services) await s.kill();
    await webUi?.stop();
    await connection?.close();
    await temporal?.destroy();
    for (const s of servers) await s.close();
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  test('50 queued events: both hosts work, a server restart mid-ingest and a host lost for good lose and duplicate nothing', async () => {
    const client = new Client({ connection });
    // When each phase ended, from the test's start: printed with the summary, to see where the time goes.
    const started = Date.now();
    const phases: string[] = [];
    const phase = (what: string) => phases.push(`${what} ${Math.round((Date.now() - started) / 1000)} s`);
    const cloud = await fakeCloud(dir);
    const env = { TEMPORAL_ADDRESS: temporal.address, TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env };
    const hostConf = (host: string) =>
      writeConf(
        topology,
        `worker {
  workingFolder = "${dir}/${host}/work"
  hostTaskQueue = "${taskQueue}-${host}"
  maxConcurrentFileSteps = 4
  heartbeatTimeoutMs = 5000
  hostScheduleToStartTimeoutMs = 10000
  retryInitialIntervalMs = 500
}
spool { folder = "${dir}/${host}/spool" }
${cloud.synnefoConf('prepare = false\n  cloud = "e2e"')}`,
      );
    const hostA = await startService(['worker', '--conf', await hostConf('hostA')], { env });
    const hostB = await startService(['worker', '--conf', await hostConf('hostB')], { env });
    services.push(hostA, hostB);
    const bridgeConf = await hostConf('bridge');
    const bridge = await startService(['dequeue', '--server', '--conf', bridgeConf], {
      env,
      readyPattern: /consuming/,
    });
    services.push(bridge);

    const events: string[] = [];
    for (let n = 0; n < IMAGES; n++) {
      const disk = await servedDisk(dir, `disk-${n}.raw`, IMAGE_MIB, RATE);
      servers.push(disk.server);
      events.push(
        JSON.stringify({
          VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
          VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
          VMCATCHER_EVENT_DC_IDENTIFIER: `topology-image-${n}`,
          VMCATCHER_EVENT_DC_TITLE: `Topology image ${n}`,
          VMCATCHER_EVENT_HV_URI: disk.url,
          VMCATCHER_EVENT_HV_SIZE: String(disk.size),
          VMCATCHER_EVENT_HV_FORMAT: 'raw',
          VMCATCHER_EVENT_HV_VERSION: '1.0',
          VMCATCHER_EVENT_SL_CHECKSUM_SHA512: disk.sha512,
          VMCATCHER_EVENT_VO: 'topology.vo',
        }),
      );
    }
    const list = (query: string) =>
      collect(client.workflow.list({ query: `ImageListIdentifier = '${listId}' AND ${query}` }));

    // The first half; the hosts take images as they claim them on the shared queue.
    await publishBodies(topology, events.slice(0, FIRST_BATCH));
    const completed = () => list(`WorkflowType = 'registerImage' AND ExecutionStatus = 'Completed'`);
    await waitFor(
      'the first registrations',
      async () => (await completed()).length,
      (n) => n >= 10,
      120_000,
    );
    phase('10 registered');

    // The server goes down while the bridge ingests: the rest of the events, and repeats of
    // events already delivered (as a re-run of vmcatcher or a redelivery would), arrive meanwhile.
    const down = Date.now();
    await temporal.stop();
    await publishBodies(topology, [...events.slice(FIRST_BATCH), ...events.slice(0, REPEATS)]);
    await new Promise((r) => setTimeout(r, 3000));
    // Meanwhile the events wait on the queue: the bridge acks a message only once its start is recorded.
    expect(await queueDepth(topology.queue)).toBeGreaterThan(0);
    await temporal.start();
    const downMs = Date.now() - down;
    phase('server back');

    // Every event reaches a workflow once the server is back.
    await waitFor(
      'the bridge to start a workflow for every image',
      async () => new Set((await list(`WorkflowType = 'imageRevision'`)).map((w) => w.workflowId)).size,
      (n) => n === IMAGES,
      120_000,
    );
    phase('every image started');

    // Host A dies for good in the middle of its downloads, once it has registered images of its own.
    const hostAQueue = `${taskQueue}-hostA`;
    const caught = await waitFor(
      'host A to have registered images and to be in the middle of a download',
      async () => {
        const doneOnA = (await hostsOf(client, await completed())).get(hostAQueue) ?? 0;
        if (doneOnA === 0) return [];
        return downloadingOn(
          client,
          await list(`WorkflowType = 'registerImage' AND ExecutionStatus = 'Running'`),
          hostA,
        );
      },
      (ids) => ids.length > 0,
      120_000,
    );
    await hostA.kill();
    phase('host A killed');

    // Each host works through its images a few at a time (maxConcurrentFileSteps), on two cores
    // shared with the server, PostgreSQL and the other test file jest runs meanwhile.
    await waitFor(
      'every image to be registered',
      async () => (await list(`WorkflowType = 'imageRevision' AND ExecutionStatus = 'Running'`)).length,
      (running) => running === 0,
      600_000,
    ).catch(async (err: unknown) => {
      throw new Error(
        `${(err as Error).message}\n${await whereTheyAre(client, await list(`ExecutionStatus = 'Running'`))}`,
      );
    });
    phase('every image registered');
    expect(await queueDepth(topology.queue)).toBe(0);
    expect(await queueDepth(topology.deadLetterQueue).catch(() => 0)).toBe(0);

    // Nothing lost, nothing duplicated: fifty images on the cloud, one per image identifier, and
    // every registration completed, each image's with its image id. No two executions of an image
    // both registered it; one may find the image there and reuse it (a repeat, or the next attempt
    // after the host that registered it died, or after the restart lost the step's completion).
    const images = await cloud.images();
    const identifiers = images.map((i) => i.properties.VMCATCHER_DC_IDENTIFIER).sort();
    expect(identifiers).toEqual(events.map((_, n) => `topology-image-${n}`).sort());
    const registrations = await list(`WorkflowType = 'registerImage'`);
    expect(registrations.every((r) => r.status.name === 'COMPLETED')).toBe(true);
    const imageIdOf = new Map(images.map((i) => [i.properties.VMCATCHER_DC_IDENTIFIER, i.id]));
    const registeredBy = new Map<string, number>();
    const resultsOf = new Map<string, string>();
    for (const r of registrations) {
      const result = (await client.workflow.getHandle(r.workflowId, r.runId).result()) as {
        imageId: string;
        reused: boolean;
      };
      const identifier = String(r.typedSearchAttributes.get(SA_IMAGE_ID));
      expect([identifier, result.imageId]).toEqual([identifier, imageIdOf.get(identifier)]);
      resultsOf.set(identifier, result.imageId);
      if (!result.reused) registeredBy.set(identifier, (registeredBy.get(identifier) ?? 0) + 1);
    }
    expect(resultsOf.size).toBe(IMAGES);
    expect([...registeredBy.values()].every((n) => n === 1)).toBe(true);

    // Both hosts registered images; what host A was downloading when it died finished on host B.
    const hosts = await hostsOf(client, registrations);
    expect(hosts.get(hostAQueue)).toBeGreaterThan(0);
    expect(hosts.get(`${taskQueue}-hostB`)).toBeGreaterThan(0);
    for (const workflowId of caught) {
      const queues = await acquireQueues(client, workflowId);
      expect(queues[0]).toBe(hostAQueue);
      expect(queues.at(-1)).toBe(`${taskQueue}-hostB`);
    }

    // `registrations` answers from the server's visibility store, which is PostgreSQL here.
    const listed = await runCli(
      [
        'registrations',
        '--conf',
        bridgeConf,
        '--image-list-identifier',
        listId,
        '--stage',
        'done',
        '--limit',
        '500',
        '--json',
      ],
      { env },
    );
    expect(listed.exitCode).toBe(0);
    const rows = listed.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { type: string; stage: string; imageIdentifier: string });
    expect(rows.every((r) => r.stage === 'done')).toBe(true);
    expect(new Set(rows.filter((r) => r.type === 'registerImage').map((r) => r.imageIdentifier)).size).toBe(IMAGES);
    const inPostgres = await psql(
      temporal.databases.visibility,
      `SELECT count(DISTINCT workflow_id) FROM executions_visibility WHERE workflow_type_name = 'registerImage' AND status = 2`,
    );
    expect(Number(inPostgres)).toBe(IMAGES);

    // The Web UI's search (its API, as the page calls it) by ImageStage and ImageListIdentifier.
    webUi = await startWebUi(temporal.address, path.join(dir, 'logs'));
    const query = `ImageStage = "done" AND ImageListIdentifier = "${listId}" AND WorkflowType = "registerImage"`;
    const found = await waitFor(
      'the Web UI to list the registrations',
      async () => {
        const res = await fetch(`${webUi!.url}/api/v1/namespaces/default/workflows?query=${encodeURIComponent(query)}`);
        const body = (await res.json()) as { executions?: Array<{ execution: { workflowId: string } }> };
        return new Set((body.executions ?? []).map((e) => e.execution.workflowId));
      },
      (ids) => ids.size === IMAGES,
      30_000,
    );
    expect(found.size).toBe(IMAGES);
    phase('checked');
    console.log(
      `production topology: ${IMAGES} images, registered by host A ${hosts.get(hostAQueue)}, host B ${hosts.get(`${taskQueue}-hostB`)}; ` +
        `${caught.length} moved from host A (killed mid-download) to host B; server down ${downMs} ms mid-ingest; ` +
        `server set-up ${serverStartS} s; phases: ${phases.join(', ')}`,
    );
  }, 1_000_000);
});

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** The host task queues that did the download of each completed registration: queue → count. */
async function hostsOf(client: Client, registrations: WorkflowExecutionInfo[]): Promise<Map<string, number>> {
  const hosts = new Map<string, number>();
  for (const r of registrations) {
    if (r.status.name !== 'COMPLETED') continue;
    const queue = (await acquireQueues(client, r.workflowId, r.runId)).at(-1);
    if (queue) hosts.set(queue, (hosts.get(queue) ?? 0) + 1);
  }
  return hosts;
}

/** The task queues acquireImage was scheduled on, in order, in a registration's history. */
async function acquireQueues(client: Client, workflowId: string, runId?: string): Promise<string[]> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  return (history.events ?? [])
    .map((e) => e.activityTaskScheduledEventAttributes)
    .filter((a) => a?.activityType?.name === 'acquireImage')
    .map((a) => a!.taskQueue!.name!);
}

/** The running registrations whose download is under way on `host` (its worker's identity), with bytes received. */
async function downloadingOn(client: Client, running: WorkflowExecutionInfo[], host: ServiceProcess) {
  const ids: string[] = [];
  for (const r of running) {
    const description = await client.workflow.getHandle(r.workflowId, r.runId).describe();
    const downloading = (description.raw.pendingActivities ?? []).some(
      (a) =>
        a.activityType?.name === 'acquireImage' &&
        a.lastWorkerIdentity?.startsWith(`${host.proc.pid}@`) &&
        (a.heartbeatDetails?.payloads?.length ?? 0) > 0,
    );
    if (downloading) ids.push(r.workflowId);
  }
  return ids;
}

/** What each still-running workflow is doing: its stage, and its pending activities with their attempts and last failure. */
async function whereTheyAre(client: Client, running: WorkflowExecutionInfo[]): Promise<string> {
  const lines: string[] = [];
  for (const r of running) {
    const d = await client.workflow.getHandle(r.workflowId, r.runId).describe();
    const pending = (d.raw.pendingActivities ?? []).map(
      (a) =>
        `${a.activityType?.name} attempt ${a.attempt} state ${a.state} worker ${a.lastWorkerIdentity ?? '-'}${a.lastFailure ? ` failure ${a.lastFailure.message}` : ''}`,
    );
    lines.push(
      `${r.workflowId} [${String(r.typedSearchAttributes.get(SA_STAGE) ?? '')}] ${pending.join('; ') || 'no pending activity'}`,
    );
  }
  return lines.join('\n');
}

async function psql(database: string, sql: string): Promise<string> {
  const { stdout } = await execa('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', database, '-Atc', sql]);
  return stdout.trim();
}
