import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import {
  bundleWorkflowCode,
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import type { Metric } from 'prom-client';
import { ImageEventSchema, type ImageEvent } from '../../core/event.js';
import {
  LIST_REJECTED,
  OUT_OF_SPACE,
  REGISTER_WORKFLOW,
  SYNC_WORKFLOW,
  type HostClaim,
  type SubscriptionReadInput,
  type SubscriptionSpec,
} from '../../core/workflow-contract.js';
import { listRead, type ReadSubscribedListResult } from '../../image-lists/list-read.js';
import { classifyFailures } from '../../worker/failures.js';
import { createWorkerMetrics, type WorkerMetrics } from '../../worker/metrics.js';
import { DiskWaits, measureSteps, outcomeSinks } from '../../worker/outcome-metrics.js';
import { ROOT } from '../support/cli.js';
import { uniqueTaskQueue } from '../support/service-process.js';
import { mockedSyncSubscription } from '../support/sync-run-mock.js';

/**
 * How the worker counts what happened to images and subscriptions, on the real dev server with
 * mocked steps: once per workflow outcome whatever the activity retries, never again on replay;
 * every attempt of a step measured; an image waiting for disk shown while it waits.
 */
const SITE = { cloud: { type: 'synnefo' as const }, synnefo: { cloud: 'site' }, clouds: {} } as Parameters<
  typeof outcomeSinks
>[1];

function claimFor(queue: string, overrides: Partial<HostClaim> = {}): HostClaim {
  return {
    taskQueue: queue,
    controlQueue: queue,
    hostname: 'mock-host',
    heartbeatTimeoutMs: 2000,
    downloadTimeoutMs: 60_000,
    toolTimeoutMs: 60_000,
    scheduleToStartTimeoutMs: 5000,
    retryInitialIntervalMs: 100,
    retryMaximumIntervalMs: 200,
    retryMaximumAttempts: 3,
    diskWaitIntervalMs: 300,
    diskWaitMaxMs: 5000,
    ...overrides,
  };
}

const imageOn = (queue: string): ImageEvent =>
  ImageEventSchema.parse({
    origin: 'message',
    imageListId: 'mocked',
    imageId: queue,
    uri: 'https://example.org/img.qcow2',
    checksumSha512: 'ab'.repeat(64),
  });

type Activities = Record<string, (...args: never[]) => Promise<unknown>>;

function registrationSteps(queue: string, claim: Partial<HostClaim> = {}, overrides: Activities = {}): Activities {
  return {
    claimHost: async () => claimFor(queue, claim),
    findRegisteredImage: async () => null,
    acquireHostSlot: async () => undefined,
    releaseHostSlot: async () => undefined,
    acquireImage: async () => ({ workDir: '/w', path: '/w/img', bytes: 1234, sha512: 'x', source: 'download' }),
    inspectImage: async () => ({ format: 'qcow2', detectedBy: 'content' }),
    convertToRaw: async () => ({ path: '/w/img.raw', virtualSize: 1, bytes: 1, steps: [] }),
    prepareImage: async () => ({ path: '/w/img.raw', metadata: {}, prepared: true }),
    registerWithKamaki: async () => ({
      imageId: 'new-image',
      name: 'img',
      location: 'pithos://x',
      reused: false,
      isPublic: true,
      properties: {},
    }),
    cleanupWorkspace: async () => undefined,
    ...overrides,
  };
}

/** The value of one series (0 when it does not exist). */
async function valueOf(metric: Metric, labels: Record<string, string>, suffix = ''): Promise<number> {
  const { values } = await metric.get();
  const match = values.find(
    (v) =>
      (suffix === '' || String((v as { metricName?: string }).metricName).endsWith(suffix)) &&
      Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want),
  );
  return match?.value ?? 0;
}

/** Every series of a counter, summed. */
async function total(metric: Metric): Promise<number> {
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

describe('product metrics of workflow outcomes', () => {
  let connection: NativeConnection;
  let clientConnection: Connection;
  let client: Client;
  let bundle: WorkflowBundleWithSourceMap;

  beforeAll(async () => {
    try {
      Runtime.install({ logger: new DefaultLogger('WARN') });
    } catch {
      // Installed already in this process.
    }
    bundle = await bundleWorkflowCode({
      workflowsPath: path.join(ROOT, 'workflows/index.ts'),
      workflowInterceptorModules: [path.join(ROOT, 'workflows/outcomes.ts')],
      logger: new DefaultLogger('WARN'),
    });
    connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS });
    clientConnection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection: clientConnection });
  });

  afterAll(async () => {
    await clientConnection?.close();
    await connection?.close();
  });

  function newMetrics(diskWaits = new DiskWaits()): WorkerMetrics {
    return createWorkerMetrics({
      slots: () => ({ capacity: 1, held: 0, waiting: 0 }),
      waitingForDisk: () => diskWaits.size,
      subscriptions: async () => [],
    });
  }

  /** A worker as worker/worker.ts builds it (sinks, both activity interceptors) on a fresh queue. */
  async function withWorker<T>(
    metrics: WorkerMetrics,
    activities: (queue: string) => Activities,
    body: (queue: string) => Promise<T>,
    diskWaits = new DiskWaits(),
  ): Promise<T> {
    const taskQueue = uniqueTaskQueue('outcomes');
    const worker = await Worker.create({
      connection,
      taskQueue,
      workflowBundle: bundle,
      activities: activities(taskQueue),
      sinks: outcomeSinks(metrics, SITE),
      interceptors: { activity: [measureSteps(metrics, diskWaits), classifyFailures] },
    });
    return worker.runUntil(body(taskQueue));
  }

  test('a registration whose upload is retried twice is counted registered once, each attempt of the step measured', async () => {
    const metrics = newMetrics();
    let uploads = 0;
    const workflowId = await withWorker(
      metrics,
      (queue) =>
        registrationSteps(
          queue,
          {},
          {
            registerWithKamaki: async () => {
              if (++uploads <= 2) throw ApplicationFailure.retryable('the upload broke', 'KamakiError');
              return { imageId: 'new-image', name: 'img', location: 'pithos://x', reused: false, properties: {} };
            },
          },
        ),
      async (queue) => {
        const handle = await client.workflow.start(REGISTER_WORKFLOW, {
          taskQueue: queue,
          workflowId: `${queue}-register`,
          args: [{ event: imageOn(queue), options: { kamakiCloud: 'mock' } }],
        });
        await handle.result();
        return handle.workflowId;
      },
    );
    expect(uploads).toBe(3);
    expect(await valueOf(metrics.registered, { cloud: 'synnefo-mock' })).toBe(1);
    expect(await total(metrics.registered)).toBe(1);
    expect(await total(metrics.failed)).toBe(0);
    expect(await valueOf(metrics.downloadedBytes, {})).toBe(1234);
    expect(await valueOf(metrics.stepDuration, { step: 'upload', outcome: 'failed' }, '_count')).toBe(2);
    expect(await valueOf(metrics.stepDuration, { step: 'upload', outcome: 'completed' }, '_count')).toBe(1);
    for (const step of ['acquire', 'inspect', 'convert', 'prepare'])
      expect(await valueOf(metrics.stepDuration, { step, outcome: 'completed' }, '_count')).toBe(1);

    // The same history replayed (as after a restart or a cache eviction) counts nothing more.
    const history = await client.workflow.getHandle(workflowId).fetchHistory();
    await Worker.runReplayHistory(
      { workflowBundle: bundle, sinks: outcomeSinks(metrics, SITE), replayName: 'outcomes' },
      history,
      workflowId,
    );
    expect(await total(metrics.registered)).toBe(1);
  }, 120_000);

  test('a registration that fails for good after three attempts is counted failed once, with its kind and cloud', async () => {
    const metrics = newMetrics();
    let prepares = 0;
    await withWorker(
      metrics,
      (queue) =>
        registrationSteps(
          queue,
          {},
          {
            prepareImage: async () => {
              prepares++;
              throw ApplicationFailure.retryable('snf-mkimage exited with 1', 'SnfMkimageError');
            },
          },
        ),
      async (queue) => {
        const handle = await client.workflow.start(REGISTER_WORKFLOW, {
          taskQueue: queue,
          workflowId: `${queue}-register`,
          args: [{ event: imageOn(queue), options: {} }],
        });
        await expect(handle.result()).rejects.toThrow();
      },
    );
    expect(prepares).toBe(3);
    expect(await valueOf(metrics.failed, { cloud: 'synnefo-site', action: 'register', kind: 'SnfMkimageError' })).toBe(
      1,
    );
    expect(await total(metrics.failed)).toBe(1);
    expect(await total(metrics.registered)).toBe(0);
    expect(await valueOf(metrics.stepDuration, { step: 'prepare', outcome: 'failed' }, '_count')).toBe(3);
  }, 120_000);

  test('an image waiting for disk space is shown while it waits, and no longer once it is cancelled', async () => {
    const diskWaits = new DiskWaits();
    const metrics = newMetrics(diskWaits);
    const gauge = async () => {
      const text = await metrics.registry.getSingleMetricAsString('snf_vmcatcher_images_waiting_for_disk');
      return Number(/^snf_vmcatcher_images_waiting_for_disk (\d+)$/m.exec(text)?.[1]);
    };
    await withWorker(
      metrics,
      (queue) =>
        registrationSteps(
          queue,
          // A long wait, so the test sees it whatever the machine's load.
          { diskWaitIntervalMs: 600_000, diskWaitMaxMs: 3_600_000 },
          {
            acquireImage: async () => {
              throw ApplicationFailure.create({
                message: 'needs 2 GB, 1 GB free',
                type: OUT_OF_SPACE,
                nonRetryable: true,
                details: [{ neededBytes: 2e9, freeBytes: 1e9 }],
              });
            },
          },
        ),
      async (queue) => {
        const handle = await client.workflow.start(REGISTER_WORKFLOW, {
          taskQueue: queue,
          workflowId: `${queue}-register`,
          args: [{ event: imageOn(queue), options: {} }],
        });
        expect(await gauge()).toBe(0);
        await until(async () => (await gauge()) === 1);
        await handle.cancel();
        await expect(handle.result()).rejects.toThrow();
        await until(async () => (await gauge()) === 0);
      },
      diskWaits,
    );
    // Cancelled by a newer event: not a failure.
    expect(await total(metrics.failed)).toBe(0);
  }, 120_000);

  test('subscription syncs are counted by outcome: a changed list, and a refused one (ImageListRejected)', async () => {
    const metrics = newMetrics();
    const subscription: SubscriptionSpec = {
      url: 'https://lists.example.org/list.json',
      endorsers: [],
      everyMs: 3_600_000,
      origin: 'config',
    };
    let reads = 0;
    await withWorker(
      metrics,
      () => {
        const steps = {
          readSubscription: (input: SubscriptionReadInput) =>
            listRead(async (): Promise<ReadSubscribedListResult> => {
              if (++reads === 2) throw ApplicationFailure.nonRetryable('not signed by an endorser', LIST_REJECTED);
              return {
                notModified: false,
                list: { identifier: 'list-1', version: '1' },
                images: [],
                invalid: [],
                selection: '',
              };
            }, input),
          cloudInventory: async () => ({ images: [], expireAction: 'make-private' as const }),
          deliverImageEvents: async () => [],
        };
        // A run does it all in one step (syncSubscription), made here of the mocked steps.
        return { ...steps, syncSubscription: mockedSyncSubscription(steps) };
      },
      async (queue) => {
        const run = (n: number) =>
          client.workflow.execute(SYNC_WORKFLOW, {
            taskQueue: queue,
            workflowId: `${queue}-sync-${n}`,
            args: [{ subscription }],
          });
        await run(1);
        await expect(run(2)).rejects.toThrow();
      },
    );
    expect(await valueOf(metrics.syncs, { subscription: subscription.url, outcome: 'changed' })).toBe(1);
    expect(await valueOf(metrics.syncs, { subscription: subscription.url, outcome: 'refused' })).toBe(1);
    expect(await total(metrics.syncs)).toBe(2);
  }, 120_000);
});

async function until(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
