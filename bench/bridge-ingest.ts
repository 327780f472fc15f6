/**
 * Bridge ingest, on the production Temporal server (temporal-server on PostgreSQL, set up by
 * docker/temporal/ as compose does): a queue holding 5,000 events, then `snf-vmcatcher dequeue
 * --server`; events per second until 5,000 workflows are started, with no worker running and with
 * a worker running. The reference, on the same server in the same run: a plain Temporal client
 * (bench/plain-client.ts, a process of its own) making the same starts with as many in flight as
 * the bridge's prefetch. The CPU each process used tells what bounds each.
 */
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { deleteTopology, uniqueTopology, writeConf } from '../test/support/rabbit.js';
import { publishBodies, registerBody, queueDepth } from '../test/support/bridge.js';
import { startProductionTemporal, type ProductionTemporal } from '../test/support/production-temporal.js';
import {
  BENCH_TMP,
  REPEATS,
  ROOT,
  cpuSeconds,
  cpuSecondsOfCommand,
  log,
  median,
  round,
  type BenchResult,
} from './lib.js';
import { freePort, startSnf, type Proc } from './services.js';

const EVENTS = Number(process.env.SNF_VMCATCHER_BENCH_EVENTS ?? 5000);
/** The bridge's default rabbitmq.prefetch, and the plain client's number of starts in flight. */
const CONCURRENCY = Number(process.env.SNF_VMCATCHER_BENCH_CONCURRENCY ?? 16);

type Mode = 'client' | 'bridge' | 'bridge+worker';
const MODES: Mode[] = ['client', 'bridge', 'bridge+worker'];

/**
 * What bounds a starter: with CONCURRENCY starts in flight, the time one start takes is
 * in-flight / rate. When the machine's cores are far from busy, that time is waiting (the
 * server's persistence round trip to PostgreSQL), not computing, and more in flight would go faster.
 */
function boundOf(who: string, rate: number, coresBusy: number): string {
  const latency = round((CONCURRENCY * 1000) / rate, 0);
  return coresBusy >= 0.85
    ? `${who}: CPU-bound (the ${os.cpus().length} cores ${Math.round(coresBusy * 100)} % busy, shared by the starter, temporal-server, PostgreSQL and RabbitMQ); one start takes ${latency} ms with ${CONCURRENCY} in flight.`
    : `${who}: latency-bound: the cores are ${Math.round(coresBusy * 100)} % busy, and one start takes ${latency} ms with ${CONCURRENCY} in flight, the round trip of a start through temporal-server (history and matching) and its PostgreSQL commits; more starts in flight (rabbitmq.prefetch) would raise the rate until the cores are busy.`;
}

async function counter(metricsUrl: string, name: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : 0;
}

interface IngestRun {
  /** From the bridge's "consuming" log line (the client's first start) to the last workflow started. */
  ms: number;
  /** From spawning the bridge process (the client: same as ms). */
  msWithStartup: number;
  eventsPerSecond: number;
  /** CPU seconds used meanwhile by: the bridge or the client, the Temporal server, PostgreSQL, RabbitMQ, a running worker. */
  cpu: Record<'starter' | 'temporal' | 'postgres' | 'rabbitmq' | 'worker', number>;
}

/** CPU counters of the machine's servers, to subtract. */
function serverCpu(temporal: ProductionTemporal) {
  return {
    temporal: cpuSeconds(temporal.pid()!),
    postgres: cpuSecondsOfCommand('postgres'),
    rabbitmq: cpuSecondsOfCommand('beam.smp'),
  };
}

async function clientOnce(temporal: ProductionTemporal, n: number): Promise<IngestRun> {
  const before = serverCpu(temporal);
  const { stdout } = await execa(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(ROOT, 'bench/plain-client.ts'),
      temporal.address,
      `bench-client-${n}`,
      `bench-client-list-${n}-${Date.now()}`,
      String(EVENTS),
      String(CONCURRENCY),
    ],
    { cwd: ROOT },
  );
  const after = serverCpu(temporal);
  const result = JSON.parse(stdout.trim().split('\n').pop()!) as {
    ms: number;
    eventsPerSecond: number;
    cpuSeconds: number;
  };
  return {
    ms: result.ms,
    msWithStartup: result.ms,
    eventsPerSecond: result.eventsPerSecond,
    cpu: {
      starter: result.cpuSeconds,
      temporal: after.temporal - before.temporal,
      postgres: after.postgres - before.postgres,
      rabbitmq: after.rabbitmq - before.rabbitmq,
      worker: 0,
    },
  };
}

async function bridgeOnce(temporal: ProductionTemporal, withWorker: boolean, n: number): Promise<IngestRun> {
  const topology = uniqueTopology('bench-ingest');
  const taskQueue = `bench-ingest-${n}-${withWorker ? 'w' : 'n'}`;
  const listId = `bench-list-${topology.queue}`;
  const metricsPort = await freePort();
  const conf = await writeConf(
    topology,
    `temporal { address = "${temporal.address}", taskQueue = "${taskQueue}" }\nworker { workingFolder = "${BENCH_TMP}/ingest-work" }\nspool { folder = "${BENCH_TMP}/ingest-spool" }\nrabbitmq.prefetch = ${CONCURRENCY}`,
  );
  const env = { TEMPORAL_ADDRESS: temporal.address };
  let worker: Proc | undefined;
  let bridge: Proc | undefined;
  try {
    await publishBodies(
      topology,
      Array.from({ length: EVENTS }, (_, i) => registerBody(listId, i)),
    );
    if ((await queueDepth(topology.queue)) !== EVENTS) throw new Error('the queue does not hold every event');
    if (withWorker) worker = await startSnf(['worker', '--conf', conf], env, /worker started/);
    const spawned = process.hrtime.bigint();
    // JustLogHandler: with a worker running, the workflows complete at once instead of trying to
    // download 5,000 images that do not exist; the starts the bridge makes are the same.
    bridge = await startSnf(
      ['dequeue', '--server', '--conf', conf, '--metrics-port', String(metricsPort), '--handler', 'JustLogHandler'],
      env,
      /"consuming"|consuming/,
    );
    const consuming = process.hrtime.bigint();
    const before = {
      ...serverCpu(temporal),
      starter: cpuSeconds(bridge.proc.pid!),
      worker: worker ? cpuSeconds(worker.proc.pid!) : 0,
    };
    const url = `http://127.0.0.1:${metricsPort}/metrics`;
    const deadline = Date.now() + 15 * 60_000;
    let started = 0;
    while ((started = await counter(url, 'snf_vmcatcher_bridge_events_delivered_total')) < EVENTS) {
      if (Date.now() > deadline) throw new Error(`only ${started} of ${EVENTS} workflows started in 15 minutes`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const done = process.hrtime.bigint();
    const after = {
      ...serverCpu(temporal),
      starter: cpuSeconds(bridge.proc.pid!),
      worker: worker ? cpuSeconds(worker.proc.pid!) : 0,
    };
    const ms = Number(done - consuming) / 1e6;
    const cpu = Object.fromEntries(
      Object.keys(after).map((k) => [k, after[k as keyof typeof after] - before[k as keyof typeof before]]),
    ) as IngestRun['cpu'];
    return { ms, msWithStartup: Number(done - spawned) / 1e6, eventsPerSecond: EVENTS / (ms / 1000), cpu };
  } finally {
    await bridge?.stop();
    await worker?.stop();
    await deleteTopology(topology);
    await rm(path.dirname(conf), { recursive: true, force: true });
  }
}

export async function benchBridge(): Promise<BenchResult> {
  const temporal = await startProductionTemporal('snf_bench_ingest', path.join(BENCH_TMP, 'ingest-temporal'));
  log(
    `Temporal server ${temporal.address} on PostgreSQL databases ${temporal.databases.temporal}, ${temporal.databases.visibility}`,
  );
  const runs: Record<Mode, IngestRun[]> = { client: [], bridge: [], 'bridge+worker': [] };
  try {
    for (let i = 0; i < REPEATS; i++) {
      for (const mode of MODES) {
        const run =
          mode === 'client' ? await clientOnce(temporal, i) : await bridgeOnce(temporal, mode === 'bridge+worker', i);
        runs[mode].push(run);
        const cpu = Object.entries(run.cpu)
          .map(([k, v]) => `${k} ${round(v, 1)} s`)
          .join(', ');
        log(
          `ingest #${i + 1}, ${mode}: ${EVENTS} starts in ${round(run.ms, 0)} ms = ${round(run.eventsPerSecond, 1)}/s; CPU ${cpu}`,
        );
      }
    }
  } finally {
    await temporal.destroy();
    await rm(path.join(BENCH_TMP, 'ingest-temporal'), { recursive: true, force: true });
  }
  const med = (mode: Mode, pick: (r: IngestRun) => number) => median(runs[mode].map(pick));
  const rate = (mode: Mode) => med(mode, (r) => r.eventsPerSecond);
  /** CPU milliseconds per start, and the share of the two cores the run kept busy. */
  const cpuPerStart = (mode: Mode, key: keyof IngestRun['cpu']) =>
    round(
      med(mode, (r) => (r.cpu[key] * 1000) / EVENTS),
      2,
    );
  const busy = (mode: Mode) =>
    round(
      med(mode, (r) => Object.values(r.cpu).reduce((a, b) => a + b, 0) / (r.ms / 1000) / os.cpus().length),
      2,
    );
  const ratio = rate('bridge') / rate('client');
  const row = (mode: Mode, what: string) => ({
    'starts made by': what,
    'median starts/s': round(rate(mode), 1),
    'median ms': round(
      med(mode, (r) => r.ms),
      0,
    ),
    'CPU ms/start: starter': cpuPerStart(mode, 'starter'),
    'temporal-server': cpuPerStart(mode, 'temporal'),
    PostgreSQL: cpuPerStart(mode, 'postgres'),
    RabbitMQ: cpuPerStart(mode, 'rabbitmq'),
    worker: cpuPerStart(mode, 'worker'),
    'cores busy': busy(mode),
  });
  return {
    name: 'bridge',
    title: `Bridge ingest on the PostgreSQL-backed Temporal server: ${EVENTS} queued events to started workflows, against a plain client`,
    method:
      `The production Temporal server (temporal-server ${'built by scripts/build-temporal-server.sh'} on two fresh PostgreSQL databases, set up by docker/temporal/ as compose does). ` +
      `Plain client: bench/plain-client.ts in a process of its own makes the bridge's start (core/starter.ts signal-with-start, JustLogHandler) for ${EVENTS} events, ` +
      `${CONCURRENCY} in flight, timed from its first start to its last. Bridge: ${EVENTS} flat register events published (persistent, confirmed) to a fresh queue on the local RabbitMQ; ` +
      `then \`snf-vmcatcher dequeue --server\` (rabbitmq.prefetch ${CONCURRENCY}, handler JustLogHandler) is started; the time runs from its "consuming" log line until its ` +
      `snf_vmcatcher_bridge_events_delivered_total metric reaches ${EVENTS}. "bridge+worker": an \`snf-vmcatcher worker\` on the same task queue runs the workflows meanwhile. ` +
      `CPU: user+system seconds of each process (/proc) over the timed part, per start; "cores busy" = all of it / wall time / ${os.cpus().length} cores. ` +
      `${REPEATS} repeats per mode, interleaved; everything on the same machine.`,
    rows: [
      row('client', 'plain Temporal client'),
      row('bridge', 'bridge, worker stopped'),
      row('bridge+worker', 'bridge, worker running'),
    ],
    targets: [
      {
        target: 'bridge ≥ 0.9 × the plain client, same server, same concurrency',
        measured: `${round(ratio, 2)} × (${round(rate('bridge'), 1)} vs ${round(rate('client'), 1)} starts/s)`,
        met: ratio >= 0.9,
      },
      {
        target: '≥ 100 events/s queue → started workflows, worker stopped',
        measured: `${round(rate('bridge'), 1)} events/s`,
        met: rate('bridge') >= 100,
      },
    ],
    notes: [
      ...(['client', 'bridge'] as const).map((mode) =>
        boundOf(mode === 'client' ? 'plain client' : 'bridge', rate(mode), busy(mode)),
      ),
      `Load average when the benchmark ended: ${os
        .loadavg()
        .map((l) => round(l, 2))
        .join(', ')} (other processes on the machine share its cores).`,
    ],
    raw: runs,
  };
}
