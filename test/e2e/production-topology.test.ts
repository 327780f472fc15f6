import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { execa } from 'execa';
import { IMAGE_REVISION_WORKFLOW, REGISTER_WORKFLOW } from '../../core/workflow-contract.js';
import { freePort, publishBodies, queueDepth, waitFor } from '../support/bridge.js';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startProductionTemporal, TEMPORAL_UI_SERVER, type ProductionTemporal } from '../support/production-temporal.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { servedDisk } from '../support/throttled-file-server.js';
import { registrationOf } from '../support/workflows.js';

const IMAGES = 50;
const MiB = 1024 * 1024;
/** Each download takes ≈ 2 s, so a host always has some in flight while it has work. */
const RATE = MiB / 2;

async function counter(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

/**
 * Issue #14: the production topology running for real, scaled down. The Temporal server (not the
 * dev server) on PostgreSQL, set up by docker/temporal/ as compose does; two workers acting as two
 * hosts; the bridge draining 50 queued events. Mid-ingest the Temporal server restarts; later one
 * host is SIGKILLed for good as it starts a download. Every image is registered exactly once, the lost host's
 * registrations finish on the other, and the registrations CLI and the Web UI's search answer
 * from PostgreSQL visibility.
 */
describe('the production topology: Temporal server on PostgreSQL, two worker hosts, the bridge', () => {
  const topology = uniqueTopology('prod');
  const listId = `prod-list-${Math.random().toString(16).slice(2, 10)}`;
  const taskQueue = uniqueTaskQueue('prod');
  let dir: string;
  let temporal: ProductionTemporal | undefined;
  let connection: Connection | undefined;
  const services: ServiceProcess[] = [];
  const servers: Array<{ close(): Promise<void> }> = [];
  let ui: ReturnType<typeof execa> | undefined;

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-prod-'));
    temporal = await startProductionTemporal(`snf_e2e_${path.basename(dir).replace(/\W/g, '_')}`, dir);
    connection = await Connection.connect({ address: temporal.address });
  }, 240_000);

  afterAll(async () => {
    for (const s of services) await s.kill();
    ui?.kill('SIGTERM');
    await ui?.catch(() => undefined);
    for (const s of servers) await s.close();
    await connection?.close();
    await temporal?.destroy();
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  }, 120_000);

  test('50 queued events register once each across both hosts, through a server restart and the loss of one host', async () => {
    const server = temporal!;
    const cloud = await fakeCloud(dir);
    const images: Array<{ id: string; url: string; sha512: string; size: number }> = [];
    for (let i = 0; i < IMAGES; i++) {
      const disk = await servedDisk(dir, `disk-${i}.raw`, 1, RATE);
      servers.push(disk.server);
      images.push({ id: `prod-image-${i}`, url: disk.url, sha512: disk.sha512, size: disk.size });
    }
    const common = `temporal { address = "${server.address}", taskQueue = "${taskQueue}" }
spool { folder = "${dir}/spool" }
${cloud.synnefoConf('cloud = "e2e"\n  prepare = false')}`;
    const hostConf = (host: string) =>
      writeConf(
        topology,
        `${common}
worker {
  workingFolder = "${dir}/${host}-work"
  hostTaskQueue = "${taskQueue}-${host}"
  maxConcurrentFileSteps = 4
  heartbeatTimeoutMs = 3000
  hostScheduleToStartTimeoutMs = 3000
  retryInitialIntervalMs = 500
}`,
      );
    const bridgeMetricsPort = await freePort();
    // Paced (the original -sleepMillis), so that ingesting the 50 events lasts long enough to restart the server in the middle.
    const bridgeConf = await writeConf(topology, `${common}\nbridge { sleepMillis = 150, metricsPort = ${bridgeMetricsPort} }`);
    const env = { TEMPORAL_ADDRESS: server.address, ...cloud.env };

    // 50 events wait on the queue before anything consumes them.
    await publishBodies(
      topology,
      images.map((image) =>
        JSON.stringify({
          VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
          VMCATCHER_EVENT_DC_IDENTIFIER: image.id,
          VMCATCHER_EVENT_DC_TITLE: `Image ${image.id}`,
          VMCATCHER_EVENT_HV_URI: image.url,
          VMCATCHER_EVENT_HV_SIZE: String(image.size),
          VMCATCHER_EVENT_HV_FORMAT: 'raw',
          VMCATCHER_EVENT_HV_VERSION: '1.0',
          VMCATCHER_EVENT_SL_CHECKSUM_SHA512: image.sha512,
          VMCATCHER_EVENT_VO: 'prod.vo',
        }),
      ),
    );
    expect(await queueDepth(topology.queue)).toBe(IMAGES);

    const bridge = await startService(['dequeue', '--server', '--conf', bridgeConf], { env, readyPattern: /consuming/ });
    services.push(bridge);
    const delivered = () => counter(`http://127.0.0.1:${bridgeMetricsPort}/metrics`, 'snf_vmcatcher_bridge_events_delivered_total');

    // The server restarts mid-ingest: the bridge pauses, keeps the rest on the queue, and resumes.
    // (Before the workers start: an activity without heartbeat that a worker completes while the
    // server is down is retried only at its start-to-close timeout, 5 minutes for the
    // host-independent steps, which is longer than this test.)
    await waitFor('a fifth of the events ingested', delivered, (n) => n >= IMAGES / 5, 60_000);
    await server.restart();
    expect(await delivered()).toBeLessThan(IMAGES);
    const hostA = await startService(['worker', '--conf', await hostConf('hostA')], { env });
    const hostB = await startService(['worker', '--conf', await hostConf('hostB')], { env });
    services.push(hostA, hostB);

    // Once every registration has claimed its host (the host-independent steps before that have
    // no heartbeat: a worker dying in one is noticed only at its 5-minute start-to-close timeout)
    // and a third are registered, host A dies for good as it starts its next download.
    const client = new Client({ connection: connection! });
    const claimed = async () => (await client.workflow.count(`WorkflowType = '${REGISTER_WORKFLOW}' AND ImageStage != 'queued'`)).count;
    await waitFor('every registration past claiming its host', claimed, (n) => n >= IMAGES, 180_000);
    await waitFor('a third of the images registered', async () => (await cloud.images()).length, (n) => n >= IMAGES / 3, 180_000);
    const downloads = (log: string) => log.split('\n').filter((l) => l.includes('downloading the image')).length;
    const downloadsBeforeKill = downloads(hostA.log());
    await waitFor('host A starting a download', async () => downloads(hostA.log()), (n) => n > downloadsBeforeKill, 60_000);
    await hostA.kill();

    const revisionIds = new Map<string, string>();
    await waitFor(
      'every image revision workflow',
      async () => {
        for await (const wf of client.workflow.list({ query: `WorkflowType = '${IMAGE_REVISION_WORKFLOW}' AND ImageListIdentifier = '${listId}'` })) {
          revisionIds.set(wf.workflowId, wf.runId);
        }
        return revisionIds.size;
      },
      (n) => n >= IMAGES,
      120_000,
    );
    const registrations: WorkflowHandle[] = await Promise.all([...revisionIds.keys()].map((id) => registrationOf(client, id, 120_000)));
    const outcomes = await Promise.all(registrations.map((r) => r.result() as Promise<{ handler: string }>));
    expect(outcomes.every((o) => o.handler === 'registerImage')).toBe(true);

    // Nothing lost, nothing duplicated: the queue and its dead letters are empty, one image
    // revision workflow (with one run) per event, one image per event in the cloud.
    expect(await queueDepth(topology.queue)).toBe(0);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
    expect(revisionIds.size).toBe(IMAGES);
    const runs = new Map<string, number>();
    for await (const wf of client.workflow.list({ query: `ImageListIdentifier = '${listId}'` })) runs.set(wf.workflowId, (runs.get(wf.workflowId) ?? 0) + 1);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(runs.size).toBe(2 * IMAGES);
    const registered = (await cloud.images()).map((i) => i.properties.VMCATCHER_DC_IDENTIFIER).sort();
    expect(registered).toEqual(images.map((i) => i.id).sort());

    // Both hosts did file steps; the registrations host A held when it died moved to host B and finished there.
    const hostQueuesOf = async (r: WorkflowHandle) =>
      ((await r.fetchHistory()).events ?? [])
        .map((e) => e.activityTaskScheduledEventAttributes)
        .filter((a) => a?.activityType?.name === 'acquireImage')
        .map((a) => a!.taskQueue!.name!);
    const hostQueues = await Promise.all(registrations.map(hostQueuesOf));
    const last = hostQueues.map((q) => q[q.length - 1]);
    expect(last.filter((q) => q === `${taskQueue}-hostA`).length).toBeGreaterThan(0);
    expect(last.filter((q) => q === `${taskQueue}-hostB`).length).toBeGreaterThan(0);
    const moved = hostQueues.filter((q) => q.length > 1 && q[0] === `${taskQueue}-hostA`);
    expect(moved.length).toBeGreaterThan(0);
    for (const queues of moved) expect(queues[queues.length - 1]).toBe(`${taskQueue}-hostB`);
    expect(hostB.log()).toMatch(/downloading the image/);

    // `registrations` answers from the server's visibility store: PostgreSQL.
    const listed = await runCli(['registrations', '--conf', bridgeConf, '--image-list-identifier', listId, '--status', 'completed', '--limit', '100', '--json'], {
      env,
    });
    expect(listed.exitCode).toBe(0);
    const rows = listed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; stage: string; imageIdentifier: string });
    expect(rows.filter((r) => r.type === REGISTER_WORKFLOW && r.stage === 'done').map((r) => r.imageIdentifier).sort()).toEqual(images.map((i) => i.id).sort());
    const { stdout: visibilityRows } = await execa('psql', [
      '-h',
      '127.0.0.1',
      '-U',
      'postgres',
      '-d',
      server.databases.visibility,
      '-tAc',
      `SELECT count(*) FROM executions_visibility WHERE workflow_type_name = '${REGISTER_WORKFLOW}' AND status = 2`,
    ]);
    expect(Number(visibilityRows)).toBe(IMAGES);

    // The Web UI's search (its server's HTTP API, as the browser calls it) by ImageStage and ImageListIdentifier.
    const uiPort = await freePort();
    ui = execa(TEMPORAL_UI_SERVER.binary, ['--root', TEMPORAL_UI_SERVER.root, '--env', 'docker', 'start'], {
      env: { TEMPORAL_ADDRESS: server.address, TEMPORAL_UI_PORT: String(uiPort) },
      reject: false,
      stdin: 'ignore',
    });
    const query = encodeURIComponent(`ImageStage = "done" AND ImageListIdentifier = "${listId}" AND WorkflowType = "${REGISTER_WORKFLOW}"`);
    const found = await waitFor(
      'the Web UI search',
      async () => {
        const response = await fetch(`http://127.0.0.1:${uiPort}/api/v1/namespaces/default/workflows?query=${query}&pageSize=100`);
        return response.ok ? ((await response.json()) as { executions?: Array<{ execution: { workflowId: string } }> }) : undefined;
      },
      (body) => body !== undefined,
      30_000,
    );
    expect(found?.executions?.length).toBe(IMAGES);
  }, 300_000);
});

