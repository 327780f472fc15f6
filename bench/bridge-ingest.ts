/**
 * Bridge ingest: a queue holding 5,000 events, then `snf-vmcatcher dequeue --server` started
 * against the project's Temporal dev server (started here); events per second until 5,000
 * workflows are started, with no worker running and with a worker running.
 */
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { deleteTopology, uniqueTopology, writeConf } from '../test/support/rabbit.js';
import { publishBodies, registerBody, queueDepth } from '../test/support/bridge.js';
import { BENCH_TMP, REPEATS, log, median, round, type BenchResult } from './lib.js';
import { freePort, startSnf, startTemporal, type Proc } from './services.js';

const EVENTS = Number(process.env.SNF_VMCATCHER_BENCH_EVENTS ?? 5000);

async function counter(metricsUrl: string, name: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').pop()) : 0;
}

interface IngestRun {
  /** From the bridge's "consuming" log line to the last workflow started. */
  ms: number;
  /** From spawning the bridge process. */
  msWithStartup: number;
  eventsPerSecond: number;
}

async function ingestOnce(temporalAddress: string, withWorker: boolean, n: number): Promise<IngestRun> {
  const topology = uniqueTopology('bench-ingest');
  const taskQueue = `bench-ingest-${n}-${withWorker ? 'w' : 'n'}`;
  const listId = `bench-list-${topology.queue}`;
  const metricsPort = await freePort();
  const conf = await writeConf(topology, `temporal { address = "${temporalAddress}", taskQueue = "${taskQueue}" }\nworker { workingFolder = "${BENCH_TMP}/ingest-work" }\nspool { folder = "${BENCH_TMP}/ingest-spool" }`);
  const env = { TEMPORAL_ADDRESS: temporalAddress };
  let worker: Proc | undefined;
  let bridge: Proc | undefined;
  try {
    await publishBodies(topology, Array.from({ length: EVENTS }, (_, i) => registerBody(listId, i)));
    if ((await queueDepth(topology.queue)) !== EVENTS) throw new Error('the queue does not hold every event');
    if (withWorker) worker = await startSnf(['worker', '--conf', conf], env, /worker started/);
    const spawned = process.hrtime.bigint();
    // JustLogHandler: with a worker running, the workflows complete at once instead of trying to
    // download 5,000 images that do not exist; the starts the bridge makes are the same.
    bridge = await startSnf(['dequeue', '--server', '--conf', conf, '--metrics-port', String(metricsPort), '--handler', 'JustLogHandler'], env, /"consuming"|consuming/);
    const consuming = process.hrtime.bigint();
    const url = `http://127.0.0.1:${metricsPort}/metrics`;
    const deadline = Date.now() + 15 * 60_000;
    let started = 0;
    while ((started = await counter(url, 'snf_vmcatcher_bridge_events_delivered_total')) < EVENTS) {
      if (Date.now() > deadline) throw new Error(`only ${started} of ${EVENTS} workflows started in 15 minutes`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const done = process.hrtime.bigint();
    const ms = Number(done - consuming) / 1e6;
    return { ms, msWithStartup: Number(done - spawned) / 1e6, eventsPerSecond: EVENTS / (ms / 1000) };
  } finally {
    await bridge?.stop();
    await worker?.stop();
    await deleteTopology(topology);
    await rm(path.dirname(conf), { recursive: true, force: true });
  }
}

export async function benchBridge(): Promise<BenchResult> {
  const temporal = await startTemporal(path.join(BENCH_TMP, 'ingest-temporal'));
  const runs: Record<'stopped' | 'running', IngestRun[]> = { stopped: [], running: [] };
  try {
    for (let i = 0; i < REPEATS; i++) {
      for (const mode of ['stopped', 'running'] as const) {
        const run = await ingestOnce(temporal.address, mode === 'running', i);
        runs[mode].push(run);
        log(`ingest #${i + 1}, worker ${mode}: ${EVENTS} events in ${round(run.ms, 0)} ms = ${round(run.eventsPerSecond, 1)} events/s (with bridge start-up ${round(run.msWithStartup, 0)} ms)`);
      }
    }
  } finally {
    await temporal.stop();
    await rm(path.join(BENCH_TMP, 'ingest-temporal'), { recursive: true, force: true });
  }
  const med = (mode: 'stopped' | 'running', key: keyof IngestRun) => median(runs[mode].map((r) => r[key]));
  const stopped = med('stopped', 'eventsPerSecond');
  const running = med('running', 'eventsPerSecond');
  return {
    name: 'bridge',
    title: `Bridge ingest: ${EVENTS} queued events to started workflows`,
    method:
      `${EVENTS} flat register events published (persistent, confirmed) to a fresh queue on the local RabbitMQ; then \`snf-vmcatcher dequeue --server\` (default prefetch) ` +
      'is started against a Temporal dev server (the project\'s .tools/bin/temporal, SQLite file, started by the benchmark). The time runs from the bridge\'s "consuming" log line ' +
      `until its snf_vmcatcher_bridge_events_delivered_total metric reaches ${EVENTS}. "worker running": an \`snf-vmcatcher worker\` on the same task queue runs the workflows meanwhile ` +
      `(handler JustLogHandler, so they complete at once). ${REPEATS} repeats per mode, interleaved; everything on the same 2-core machine.`,
    rows: [
      { 'worker': 'stopped', 'median events/s': round(stopped, 1), 'median ms': round(med('stopped', 'ms'), 0), 'median ms incl. bridge start-up': round(med('stopped', 'msWithStartup'), 0) },
      { 'worker': 'running', 'median events/s': round(running, 1), 'median ms': round(med('running', 'ms'), 0), 'median ms incl. bridge start-up': round(med('running', 'msWithStartup'), 0) },
    ],
    targets: [{ target: '≥ 100 events/s queue → started workflows, worker stopped', measured: `${round(stopped, 1)} events/s`, met: stopped >= 100 }],
    notes: [`Load average when the benchmark ended: ${os.loadavg().map((l) => round(l, 2)).join(', ')} (other processes on the machine share its 2 cores).`],
    raw: runs,
  };
}
