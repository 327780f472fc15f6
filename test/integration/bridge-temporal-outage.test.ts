import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ResultPromise } from 'execa';
import { startDevServer, stopDevServer } from '../support/temporal-server.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import {
  executionsByImage,
  freePort,
  publishBodies,
  queueDepth,
  registerBody,
  spawnCli,
  temporalClient,
  uniqueId,
  waitFor,
  type CliProcess,
} from '../support/bridge.js';

describe('the bridge when the Temporal server goes away for 20 seconds mid-ingest', () => {
  const topology = uniqueTopology('bridge-temporal');
  const listId = uniqueId('outage-list');
  let dir: string;
  let server: ResultPromise | undefined;
  let bridge: CliProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bridge-temporal-'));
  });
  afterAll(async () => {
    await bridge?.stop();
    await stopDevServer(server);
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  test('pauses while the server is down, resumes when it is back, and no event is missing', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    const dbFile = path.join(dir, 't.db');
    server = startDevServer(port, dbFile);
    let temporal = await waitFor('the dev server', () => temporalClient(address), Boolean, 30_000);
    await temporal.close();

    await publishBodies(
      topology,
      Array.from({ length: 300 }, (_, n) => registerBody(listId, n)),
    );
    const conf = await writeConf(topology, `spool { folder = "${dir}/spool" }`);
    const metricsPort = await freePort();
    bridge = spawnCli(
      [
        'dequeue',
        '--server',
        '--conf',
        conf,
        '--prefetch',
        '4',
        '--sleep-millis',
        '40',
        '--metrics-port',
        String(metricsPort),
      ],
      {
        TEMPORAL_ADDRESS: address,
        TEMPORAL_TASK_QUEUE: uniqueId('bridge-temporal-tq'),
      },
    );
    await bridge.waitForLog(/"msg":"consuming"/);
    await waitFor(
      'the ingest to be under way',
      () => queueDepth(topology.queue),
      (n) => n < 260,
      30_000,
    );

    await stopDevServer(server);
    const stoppedAt = Date.now();
    await bridge.waitForLog(/Temporal is unavailable: paused consuming/, 30_000);
    const gauge = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(gauge).toMatch(/snf_vmcatcher_bridge_paused 1\b/);
    const depthWhilePaused = await queueDepth(topology.queue);
    expect(depthWhilePaused).toBeGreaterThan(0);

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 20_000 - (Date.now() - stoppedAt))));
    // Nothing was taken (and lost) while the server was down.
    expect(await queueDepth(topology.queue)).toBeGreaterThanOrEqual(depthWhilePaused);
    server = startDevServer(port, dbFile);

    await bridge.waitForLog(/Temporal answers again: resumed consuming/, 60_000);
    await waitFor(
      'the main queue to empty',
      () => queueDepth(topology.queue),
      (n) => n === 0,
      60_000,
    );
    temporal = await temporalClient(address);
    try {
      const byImage = await waitFor(
        '300 images with workflows',
        () => executionsByImage(temporal.client, listId),
        (m) => m.size >= 300,
        60_000,
      );
      const missingOrDoubled = Array.from({ length: 300 }, (_, n) => `image-${n}`).filter(
        (image) => byImage.get(image) !== 1,
      );
      expect(missingOrDoubled).toEqual([]);
    } finally {
      await temporal.close();
    }
    const after = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(after).toMatch(/snf_vmcatcher_bridge_paused 0\b/);
    expect(after).toMatch(/snf_vmcatcher_bridge_errors_total\{kind="temporal-unavailable"\} [1-9]/);
    expect(await bridge.stop()).toBe(0);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
  });
});
