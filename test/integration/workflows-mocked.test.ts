import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, TypedSearchAttributes } from '@temporalio/common';
import { execa } from 'execa';
import {
  NativeConnection,
  Runtime,
  DefaultLogger,
  Worker,
  bundleWorkflowCode,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import { ImageEventSchema, type ImageEvent } from '../../core/event.js';
import {
  DISK_TOO_SMALL,
  IMAGE_EVENT_SIGNAL,
  IMAGE_REVISION_WORKFLOW,
  OUT_OF_SPACE,
  SA_STAGE,
  imageRevisionWorkflowId,
  type HostClaim,
  type ImageEventSignal,
  type ImageRevisionResult,
  type RegisterImageResult,
} from '../../core/workflow-contract.js';
import { ROOT } from '../support/cli.js';
import { uniqueTaskQueue } from '../support/service-process.js';
import { TEMPORAL_CLI } from '../support/temporal-server.js';

/**
 * The workflows' branches with mocked activities on the real dev server: how a revision's
 * coordinator lets the last event win, how a registration waits for disk space, and how it moves
 * when its host is gone. Histories of these runs are kept in test/fixtures/histories/ for the
 * replay test (test/integration/workflow-replay.test.ts), so a change that breaks running
 * workflows fails CI.
 */
const HISTORIES = path.join(ROOT, 'test/fixtures/histories');

interface Calls {
  [name: string]: number;
}

/** An image of its own for each test (its queue), so no two tests share a child workflow id. */
const imageOn = (queue: string): ImageEvent =>
  ImageEventSchema.parse({
    origin: 'message',
    imageListId: 'mocked',
    imageId: queue,
    uri: 'https://example.org/img.qcow2',
    checksumSha512: 'ab'.repeat(64),
  });

function claimFor(queue: string, overrides: Partial<HostClaim> = {}): HostClaim {
  return {
    taskQueue: queue,
    controlQueue: queue,
    hostname: 'mock-host',
    heartbeatTimeoutMs: 2000,
    downloadTimeoutMs: 60_000,
    toolTimeoutMs: 60_000,
    scheduleToStartTimeoutMs: 1500,
    retryInitialIntervalMs: 100,
    retryMaximumIntervalMs: 200,
    retryMaximumAttempts: 2,
    diskWaitIntervalMs: 300,
    diskWaitMaxMs: 5000,
    ...overrides,
  };
}

/** Resolves when the activity is cancelled (heartbeating meanwhile), for steps that must be stopped. */
async function untilCancelled(): Promise<never> {
  const ctx = Context.current();
  for (;;) {
    ctx.heartbeat({ step: 'mock' });
    await ctx.sleep(100);
  }
}

describe('workflows with mocked activities', () => {
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
      logger: new DefaultLogger('WARN'),
    });
    connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS });
    clientConnection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection: clientConnection });
    if (process.env.SNF_VMCATCHER_RECORD_HISTORIES === '1') await mkdir(HISTORIES, { recursive: true });
  });

  afterAll(async () => {
    await clientConnection?.close();
    await connection?.close();
  });

  /** Runs `body` with a worker on a fresh queue whose activities are `activities` (all queues are that one). */
  async function withWorker<T>(
    activities: Record<string, (...args: never[]) => Promise<unknown>>,
    body: (queue: string) => Promise<T>,
  ): Promise<T> {
    const taskQueue = uniqueTaskQueue('mocked');
    const worker = await Worker.create({ connection, taskQueue, workflowBundle: bundle, activities });
    return worker.runUntil(body(taskQueue));
  }

  const calls = (): Calls => ({});
  const count = (c: Calls, name: string) => (c[name] = (c[name] ?? 0) + 1);

  function baseActivities(
    queue: string,
    c: Calls,
    overrides: Record<string, (...args: never[]) => Promise<unknown>> = {},
  ) {
    return {
      claimHost: async () => (count(c, 'claimHost'), claimFor(queue)),
      findRegisteredImage: async () => (count(c, 'findRegisteredImage'), null),
      acquireHostSlot: async () => void count(c, 'acquireHostSlot'),
      releaseHostSlot: async () => void count(c, 'releaseHostSlot'),
      acquireImage: async () => (
        count(c, 'acquireImage'),
        { workDir: '/w', path: '/w/img', bytes: 1, sha512: 'x', source: 'download' }
      ),
      inspectImage: async () => (count(c, 'inspectImage'), { format: 'qcow2', detectedBy: 'content' }),
      convertToRaw: async () => (count(c, 'convertToRaw'), { path: '/w/img.raw', virtualSize: 1, bytes: 1, steps: [] }),
      prepareImage: async () => (count(c, 'prepareImage'), { path: '/w/img.raw', metadata: {}, prepared: true }),
      registerWithKamaki: async () => (
        count(c, 'registerWithKamaki'),
        { imageId: 'new-image', name: 'img', location: 'pithos://x', reused: false, isPublic: true, properties: {} }
      ),
      cleanupWorkspace: async () => void count(c, 'cleanupWorkspace'),
      expireRegisteredImages: async () => (
        count(c, 'expireRegisteredImages'),
        { action: 'make-private', imageIds: ['new-image'] }
      ),
      logEvent: async () => void count(c, 'logEvent'),
      throwOnPurpose: async () => {
        throw ApplicationFailure.retryable('on purpose');
      },
      ...overrides,
    };
  }

  async function deliver(
    queue: string,
    action: 'register' | 'expire',
    event: ImageEvent = imageOn(queue),
  ): Promise<WorkflowHandle> {
    const signal: ImageEventSignal = { action, event, options: { kamakiCloud: 'mock' }, target: 'synnefo-mock' };
    return client.workflow.signalWithStart(IMAGE_REVISION_WORKFLOW, {
      taskQueue: queue,
      workflowId: imageRevisionWorkflowId(event, action, 'synnefo-mock'),
      args: [],
      signal: IMAGE_EVENT_SIGNAL,
      signalArgs: [signal],
      typedSearchAttributes: new TypedSearchAttributes([{ key: SA_STAGE, value: 'queued' }]),
    });
  }

  /**
   * With SNF_VMCATCHER_RECORD_HISTORIES=1, keeps the histories of every workflow the test ran on
   * its queue (the coordinator and its children) as replay fixtures. Record them again only when
   * a workflow change is meant to be incompatible (and say so in the commit).
   */
  async function keepHistory(name: string, queue: string): Promise<void> {
    if (process.env.SNF_VMCATCHER_RECORD_HISTORIES !== '1') return;
    for await (const wf of client.workflow.list({ query: `TaskQueue = '${queue}'` })) {
      // The Temporal CLI writes the standard JSON history format (the SDK's writer needs the
      // protobufjs instance jest's module registry does not share).
      const shown = await execa(TEMPORAL_CLI, [
        'workflow',
        'show',
        '--address',
        process.env.TEMPORAL_ADDRESS!,
        '-w',
        wf.workflowId,
        '-r',
        wf.runId,
        '--output',
        'json',
      ]);
      await writeFile(path.join(HISTORIES, `${name}.${wf.type}.json`), shown.stdout);
    }
  }

  const waitFor = async (what: string, check: () => boolean, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  test('an Expire while the registration downloads cancels it (clean-up and slot release run), then expires', async () => {
    const c = calls();
    const result = await withWorker(
      baseActivities('unused', c, {
        claimHost: async () => claimFor(Context.current().info.taskQueue),
        acquireImage: async () => {
          count(c, 'acquireImage');
          return untilCancelled();
        },
      }),
      async (queue) => {
        const parent = await deliver(queue, 'register');
        await waitFor('the download to start', () => c.acquireImage === 1);
        await deliver(queue, 'expire');
        const r = (await parent.result()) as ImageRevisionResult;
        await keepHistory('revision-expire-during-download', queue);
        return r;
      },
    );
    expect(result.action).toBe('expire');
    expect(result.expire?.imageIds).toEqual(['new-image']);
    expect(c).toMatchObject({ acquireImage: 1, cleanupWorkspace: 1, releaseHostSlot: 1, expireRegisteredImages: 1 });
    expect(c.registerWithKamaki).toBeUndefined();
  });

  test('a worker that goes silent while asking the cloud is replaced after the heartbeat timeout, not after five minutes', async () => {
    const c = calls();
    const started = Date.now();
    const result = await withWorker(
      baseActivities('unused', c, {
        claimHost: async () => claimFor(Context.current().info.taskQueue),
        // The first attempt stops answering, as a worker SIGKILLed mid-question does: no heartbeat,
        // no result. It gives up (cancelled once its heartbeat timeout is known) so the test's worker can stop.
        findRegisteredImage: async () => {
          count(c, 'findRegisteredImage');
          const ctx = Context.current();
          if (ctx.info.attempt === 1) await Promise.race([ctx.cancelled, ctx.sleep(40_000)]).catch(() => undefined);
          return null;
        },
      }),
      async (queue) => {
        const parent = await deliver(queue, 'register');
        return (await parent.result()) as ImageRevisionResult;
      },
    );
    const tookMs = Date.now() - started;
    expect(result).toMatchObject({ action: 'register', register: { imageId: 'new-image', reused: false } });
    expect(c.findRegisteredImage).toBe(2);
    // The workflow's heartbeat timeout for the shared steps (20 s) and a retry interval, not
    // their start-to-close timeout (5 minutes).
    expect(tookMs).toBeGreaterThanOrEqual(20_000);
    expect(tookMs).toBeLessThan(60_000);
  }, 90_000);

  test('an Available while the expiry runs registers once the expiry is done; a repeated event changes nothing', async () => {
    const c = calls();
    let releaseExpiry!: () => void;
    const expiryMayEnd = new Promise<void>((resolve) => (releaseExpiry = resolve));
    const result = await withWorker(
      baseActivities('unused', c, {
        claimHost: async () => claimFor(Context.current().info.taskQueue),
        expireRegisteredImages: async () => {
          count(c, 'expireRegisteredImages');
          await expiryMayEnd;
          return { action: 'make-private', imageIds: ['old'] };
        },
        findRegisteredImage: async () => {
          count(c, 'findRegisteredImage');
          return { imageId: 'old', name: 'img', location: 'pithos://x', reused: true, isPublic: true, properties: {} };
        },
      }),
      async (queue) => {
        const parent = await deliver(queue, 'expire');
        await waitFor('the expiry to start', () => c.expireRegisteredImages === 1);
        await deliver(queue, 'register');
        await deliver(queue, 'register');
        releaseExpiry();
        const r = (await parent.result()) as ImageRevisionResult;
        await keepHistory('revision-available-during-expiry', queue);
        return r;
      },
    );
    expect(result).toMatchObject({ action: 'register', register: { imageId: 'old', reused: true } });
    expect(c).toMatchObject({ expireRegisteredImages: 1, findRegisteredImage: 1 });
    expect(c.acquireImage).toBeUndefined();
  });

  test('a step short of disk space waits (stage waiting-for-disk) and runs again; one that can never fit fails', async () => {
    const c = calls();
    let converts = 0;
    const stages: string[] = [];
    const result = await withWorker(
      baseActivities('unused', c, {
        claimHost: async () => claimFor(Context.current().info.taskQueue),
        convertToRaw: async () => {
          converts++;
          if (converts <= 2) {
            throw ApplicationFailure.create({
              message: 'need 10 bytes, 3 free',
              type: OUT_OF_SPACE,
              nonRetryable: true,
              details: [{ neededBytes: 10, freeBytes: 3 }],
            });
          }
          return { path: '/w/img.raw', virtualSize: 1, bytes: 1, steps: [] };
        },
      }),
      async (queue) => {
        const parent = await deliver(queue, 'register');
        const readStage = async () => {
          for await (const wf of client.workflow.list({
            query: `WorkflowType = 'registerImage' AND TaskQueue = '${queue}'`,
          })) {
            const stage = wf.typedSearchAttributes.get(SA_STAGE);
            if (stage && stages[stages.length - 1] !== stage) stages.push(stage);
          }
        };
        const watch = setInterval(() => void readStage().catch(() => undefined), 100);
        try {
          const r = (await parent.result()) as ImageRevisionResult;
          await keepHistory('register-disk-wait', queue);
          return r;
        } finally {
          clearInterval(watch);
        }
      },
    );
    expect(result.register).toMatchObject({ imageId: 'new-image' } satisfies Partial<RegisterImageResult>);
    expect(converts).toBe(3);
    expect(stages).toContain('waiting-for-disk');

    const never = calls();
    await expect(
      withWorker(
        baseActivities('unused', never, {
          claimHost: async () => claimFor(Context.current().info.taskQueue),
          acquireImage: async () => {
            throw ApplicationFailure.create({
              message: 'the image needs 20 GiB; the filesystem holds 8 GiB',
              type: DISK_TOO_SMALL,
              nonRetryable: true,
            });
          },
        }),
        async (queue) => (await deliver(queue, 'register')).result(),
      ),
    ).rejects.toThrow();
    expect(never).toMatchObject({ cleanupWorkspace: 1, releaseHostSlot: 1 });
  });

  test('a host that does not answer its control queue is left for another host; a busy one is not', async () => {
    const c = calls();
    const result = await withWorker(
      baseActivities('unused', c, {
        // The first claim names a host whose queues nobody polls (it died); the second is this worker.
        claimHost: async () => {
          count(c, 'claimHost');
          const live = Context.current().info.taskQueue;
          return c.claimHost === 1 ? claimFor(`${live}-dead`, { scheduleToStartTimeoutMs: 1000 }) : claimFor(live);
        },
        acquireHostSlot: async () => {
          count(c, 'acquireHostSlot');
          // A busy host: the slot comes after several heartbeat timeouts' worth of waiting.
          const ctx = Context.current();
          for (let i = 0; i < 30; i++) {
            ctx.heartbeat({ step: 'waiting for a slot' });
            await ctx.sleep(100);
          }
        },
      }),
      async (queue) => {
        const parent = await deliver(queue, 'register');
        const r = (await parent.result()) as ImageRevisionResult;
        await keepHistory('register-host-lost', queue);
        return r;
      },
    );
    expect(result.register?.imageId).toBe('new-image');
    expect(c).toMatchObject({ claimHost: 2, acquireHostSlot: 1, acquireImage: 1 });
  });
});
