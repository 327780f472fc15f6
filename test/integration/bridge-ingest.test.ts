import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { deleteTopology, takeAll, uniqueTopology, writeConf } from '../support/rabbit.js';
import {
  freePort,
  publishBodies,
  queueDepth,
  registerBody,
  runsByWorkflowId,
  spawnCli,
  temporalClient,
  uniqueId,
  waitFor,
  type CliProcess,
} from '../support/bridge.js';

/** One of each kind of message that is not a valid event, with the reason the bridge must give. */
const INVALID: Array<{ body: string; reason: string; key?: string }> = [
  { body: '{"VMCATCHER_EVENT_DC_IDENTIFIER": "broken', reason: 'invalid-json' },
  { body: 'not json at all', reason: 'invalid-json' },
  { body: '["VMCATCHER_EVENT_DC_IDENTIFIER"]', reason: 'not-an-object' },
  {
    body: '{"VMCATCHER_EVENT_DC_IDENTIFIER": {"nested": "x"}, "VMCATCHER_EVENT_HV_URI": "http://h/a"}',
    reason: 'nested-value',
    key: 'VMCATCHER_EVENT_DC_IDENTIFIER',
  },
  {
    body: '{"VMCATCHER_EVENT_DC_IDENTIFIER": "a", "VMCATCHER_EVENT_HV_URI": ["http://h/a"]}',
    reason: 'nested-value',
    key: 'VMCATCHER_EVENT_HV_URI',
  },
  {
    body: '{"VMCATCHER_EVENT_TYPE": "AvailablePostFix", "VMCATCHER_EVENT_DC_IDENTIFIER": "a"}',
    reason: 'bad-event-type',
    key: 'VMCATCHER_EVENT_TYPE',
  },
  {
    body: '{"VMCATCHER_EVENT_TYPE": "", "VMCATCHER_EVENT_DC_IDENTIFIER": "a", "VMCATCHER_EVENT_TYPE ": 1}',
    reason: 'missing-key',
    key: 'VMCATCHER_EVENT_HV_URI',
  },
  {
    body: '{"VMCATCHER_EVENT_HV_URI": "http://h/no-id.img"}',
    reason: 'missing-key',
    key: 'VMCATCHER_EVENT_DC_IDENTIFIER',
  },
  { body: '{"VMCATCHER_EVENT_DC_IDENTIFIER": "no-uri"}', reason: 'missing-key', key: 'VMCATCHER_EVENT_HV_URI' },
  {
    body: '{"VMCATCHER_EVENT_DC_IDENTIFIER": "a", "VMCATCHER_EVENT_HV_URI": "http://h/a", "VMCATCHER_EVENT_HV_SIZE": "huge"}',
    reason: 'invalid-value',
    key: 'VMCATCHER_EVENT_HV_SIZE',
  },
];

function shuffle<T>(items: T[], seed = 42): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('dequeue --server (the bridge) ingesting a queue', () => {
  const topology = uniqueTopology('bridge-ingest');
  const listId = uniqueId('ingest-list');
  const taskQueue = uniqueId('bridge-ingest-tq');
  let dir: string;
  let bridge: CliProcess | undefined;
  let temporal: Awaited<ReturnType<typeof temporalClient>>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bridge-ingest-'));
    temporal = await temporalClient();
  });
  afterAll(async () => {
    await bridge?.stop();
    await temporal?.close();
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  test('1,000 messages (200 exact duplicates, 10 invalid) become exactly 790 workflows and 10 dead letters with their reasons; metrics count them', async () => {
    const unique = Array.from({ length: 790 }, (_, n) => registerBody(listId, n));
    const duplicates = Array.from({ length: 200 }, (_, n) => unique[(n * 7) % unique.length]);
    const bodies = shuffle([...unique, ...duplicates, ...INVALID.map((i) => i.body)]);
    expect(bodies).toHaveLength(1000);
    await publishBodies(topology, bodies);

    const conf = await writeConf(topology, `spool { folder = "${dir}/spool" }`);
    const metricsPort = await freePort();
    const started = Date.now();
    bridge = spawnCli(['dequeue', '-server', '-conf', conf, '--metrics-port', String(metricsPort)], {
      TEMPORAL_TASK_QUEUE: taskQueue,
    });

    await waitFor(
      'the main queue to empty',
      () => queueDepth(topology.queue),
      (n) => n === 0,
      90_000,
    );
    await waitFor(
      '10 dead letters',
      () => queueDepth(topology.deadLetterQueue),
      (n) => n === 10,
      30_000,
    );
    const runs = await waitFor(
      '790 workflows',
      () => runsByWorkflowId(temporal.client, listId),
      (m) => m.size >= 790,
      60_000,
    );
    const elapsed = Date.now() - started;

    // Prometheus text from a real HTTP GET, while the bridge runs.
    const metrics = await waitFor(
      'the metrics to show every message consumed',
      async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(),
      (text) => /snf_vmcatcher_bridge_messages_consumed_total 1000\b/.test(text),
      20_000,
    );
    expect(await bridge.stop()).toBe(0);

    expect(runs.size).toBe(790);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(await queueDepth(topology.queue)).toBe(0); // nothing left unacked either: the bridge has closed

    const dead = await takeAll(topology.deadLetterQueue);
    expect(dead).toHaveLength(10);
    const got = dead.map((m) => ({
      body: m.content.toString('utf8'),
      reason: m.properties.headers?.['x-snf-vmcatcher-reason'],
      key: m.properties.headers?.['x-snf-vmcatcher-key'],
    }));
    for (const expected of INVALID) {
      expect(got).toContainEqual({ body: expected.body, reason: expected.reason, key: expected.key });
    }
    for (const m of dead) {
      expect(m.properties.deliveryMode).toBe(2);
      expect(m.properties.contentType).toBe('application/json');
      expect(m.properties.messageId).toMatch(/^m-\d+$/);
      expect(String(m.properties.headers?.['x-snf-vmcatcher-error'])).not.toBe('');
    }

    // 990 valid events reached their image revision's workflow: 790 started one, 200 joined it.
    expect(metrics).toMatch(/snf_vmcatcher_bridge_events_delivered_total 990\b/);
    expect(metrics).toMatch(/snf_vmcatcher_bridge_dead_lettered_total\{reason="invalid-json"\} 2\b/);
    expect(metrics).toMatch(/snf_vmcatcher_bridge_dead_lettered_total\{reason="missing-key"\} 3\b/);
    expect(metrics).toMatch(/snf_vmcatcher_bridge_paused 0\b/);
    console.log(`bridge ingest: 1000 messages → 790 workflows in ${elapsed} ms`);
  });
});
