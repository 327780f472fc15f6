import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import {
  closeConnectionNamed,
  executionsByImage,
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

describe('the bridge when its RabbitMQ connection is cut mid-ingest', () => {
  const topology = uniqueTopology('bridge-cut');
  const listId = uniqueId('cut-list');
  let dir: string;
  let bridge: CliProcess | undefined;
  let temporal: Awaited<ReturnType<typeof temporalClient>>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bridge-cut-'));
    temporal = await temporalClient();
  });
  afterAll(async () => {
    await bridge?.stop();
    await temporal?.close();
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  test('reconnects and goes on: afterwards no event is missing and none has two workflows', async () => {
    await publishBodies(
      topology,
      Array.from({ length: 300 }, (_, n) => registerBody(listId, n)),
    );
    const conf = await writeConf(topology, `spool { folder = "${dir}/spool" }`);
    // Paced, so the cut lands in the middle of the ingest with messages in flight.
    bridge = spawnCli(['dequeue', '--server', '--conf', conf, '--prefetch', '8', '--sleep-millis', '15'], {
      TEMPORAL_TASK_QUEUE: uniqueId('bridge-cut-tq'),
    });
    await bridge.waitForLog(/"msg":"consuming"/);
    await waitFor(
      'the ingest to be under way',
      () => runsByWorkflowId(temporal.client, listId),
      (m) => m.size >= 40,
      30_000,
    );
    const before = await queueDepth(topology.queue);
    expect(before).toBeGreaterThan(0);

    await closeConnectionNamed(bridge.connectionName);

    await bridge.waitForLog(/RabbitMQ connection lost; reconnecting/);
    await waitFor(
      'the main queue to empty',
      () => queueDepth(topology.queue),
      (n) => n === 0,
      60_000,
    );
    const runs = await waitFor(
      '300 workflows',
      () => runsByWorkflowId(temporal.client, listId),
      (m) => m.size >= 300,
      60_000,
    );
    expect(await bridge.stop()).toBe(0);

    expect((bridge.stderr().match(/"msg":"connected to RabbitMQ"/g) ?? []).length).toBeGreaterThanOrEqual(2);
    expect(runs.size).toBe(300);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    const byImage = await executionsByImage(temporal.client, listId);
    const missingOrDoubled = Array.from({ length: 300 }, (_, n) => `image-${n}`).filter(
      (image) => byImage.get(image) !== 1,
    );
    expect(missingOrDoubled).toEqual([]);
    expect(await queueDepth(topology.queue)).toBe(0);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
  });
});
