import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { parseConfig } from '../../core/config.js';
import type { SyncImageListResult } from '../../core/workflow-contract.js';
import type { StepProgress } from '../../runtime/heartbeats.js';
import { configuredSubscriptions } from '../../subscriptions/sources.js';
import { bigListImage, bigListJson, signLargeList } from '../support/big-list.js';
import { fakeCloud, FAKE_KAMAKI } from '../support/fake-cloud.js';
import { startTestServer } from '../support/http-server.js';
import { startLatencyProxy } from '../support/latency-proxy.js';
import { uniqueTaskQueue } from '../support/service-process.js';
import { startSyncWorker } from '../support/sync-worker.js';
import { createTestPki } from '../support/test-pki.js';

/**
 * A sync run says how far its deliveries are while it delivers: the pending `syncSubscription`
 * step's heartbeat details (`done` of `total`) and the run's current details (the User Metadata
 * tab of the Web UI: "n of N delivered"), both growing. A real run of the real workflow and step
 * on the dev server: a signed list of IMAGES new images (none in the fake cloud), delivered one
 * at a time (`worker.subscriptionDeliveries = 1`) over a connection to Temporal that a proxy
 * holds DELAY_MS each way, so the deliveries take at least IMAGES × 2 × DELAY_MS (12 s) on any
 * machine, and a test watching every 250 ms sees them go. The delivered registrations wait on a
 * queue no worker polls; the test terminates them.
 */
const IMAGES = 300;
const DELAY_MS = 20;

describe('a sync run delivering 300 events, one at a time', () => {
  let dir: string;
  const stops: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-sync-progress-'));
  });

  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  test('the heartbeat of its step and the current details of the run say n of 300 delivered, n growing, until the run says what it delivered', async () => {
    const pki = await createTestPki('Progress CA');
    stops.push(() => pki.cleanup());
    const publisher = await pki.issue('appdb.example.org');
    const lists = await startTestServer();
    stops.push(() => lists.close());
    const images = Array.from({ length: IMAGES }, (_, n) => bigListImage(n));
    const json = bigListJson({
      listId: 'progress-list',
      version: '1',
      images,
      endorser: { dn: publisher.dn, ca: pki.caDn },
    });
    lists.route('/progress.list', { body: await signLargeList(dir, json, publisher) });
    const cloud = await fakeCloud(dir);
    Object.assign(process.env, cloud.env);
    const config = parseConfig(
      {
        temporal: { taskQueue: uniqueTaskQueue('deliveries') },
        worker: { workingFolder: path.join(dir, 'work'), heartbeatTimeoutMs: 4000, subscriptionDeliveries: 1 },
        security: { caPath: pki.caDir },
        synnefo: { kamaki: FAKE_KAMAKI, sudo: [], prepare: false, public: true, cloud: cloud.cloud },
        subscriptions: [
          {
            url: lists.at('/progress.list'),
            every: '8760h',
            cloud: cloud.cloud,
            endorser: { dn: publisher.dn, ca: pki.caDn },
          },
        ],
      },
      'test',
    );
    const [{ spec }] = configuredSubscriptions(config, 'config');
    // The step delivers through the far-away connection; the test watches through its own.
    const far = await startLatencyProxy(process.env.TEMPORAL_ADDRESS!, DELAY_MS);
    stops.push(() => far.close());
    const farConnection = await Connection.connect({ address: far.address });
    stops.push(() => farConnection.close());
    const sync = await startSyncWorker(config, { temporal: async () => new Client({ connection: farConnection }) });
    stops.push(() => sync.stop());

    const handle = await sync.trigger(spec!);
    const beats: Array<{ done: number; total: number }> = [];
    const details: Array<{ done: number; total: number }> = [];
    const delivering = /^Delivering the events of (\S+): (\d+) of (\d+) delivered$/;
    for (;;) {
      const described = await handle.describe();
      const step = described.raw.pendingActivities?.find((a) => a.activityType?.name === 'syncSubscription');
      const beat = step?.heartbeatDetails?.payloads?.[0];
      if (beat) {
        const progress = defaultPayloadConverter.fromPayload<StepProgress>(beat);
        if (progress.step === 'delivering image events')
          beats.push({ done: Number(progress.done), total: Number(progress.total) });
      }
      if (described.status.name !== 'RUNNING') break;
      const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
      const said = delivering.exec(metadata.currentDetails ?? '');
      if (said) {
        expect(said[1]).toBe(spec!.url);
        details.push({ done: Number(said[2]), total: Number(said[3]) });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }

    // Both say n of the 300, n growing (never back), and at least twice while it delivers.
    for (const seen of [beats, details]) {
      expect(seen.every((s) => s.total === IMAGES && s.done < IMAGES)).toBe(true);
      const values = [...new Set(seen.map((s) => s.done))];
      expect(values).toEqual([...values].sort((a, b) => a - b));
      expect(values.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
    }
    const { summary } = (await handle.result()) as SyncImageListResult;
    expect(summary.counts?.registered).toBe(IMAGES);
    expect(summary.registered.every((r) => r.reason === 'new')).toBe(true);
    // Done: the current details are the run's summary.
    const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    expect(metadata.currentDetails).not.toMatch(delivering);
    expect(metadata.currentDetails).toContain(`${IMAGES} registered, 0 expired, 0 unchanged`);
  }, 90_000);
});
