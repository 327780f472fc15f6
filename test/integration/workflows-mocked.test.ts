import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import {
  Client,
  Connection,
  ScheduleOverlapPolicy,
  WorkflowFailedError,
  type WorkflowHandle,
} from '@temporalio/client';
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
  LIST_REJECTED,
  MASS_EXPIRY_REFUSED,
  OUT_OF_SPACE,
  SA_STAGE,
  SYNC_WORKFLOW,
  imageIdentity,
  imageRevisionWorkflowId,
  type HostClaim,
  type ImageEventSignal,
  type ImageRevisionResult,
  type ListedImage,
  type RegisterImageResult,
  type SubscriptionReadInput,
  type SubscriptionSpec,
  type SyncImageListInput,
  type SyncImageListResult,
} from '../../core/workflow-contract.js';
import type { CloudImage } from '../../clouds/target.js';
import { listRead, type ReadSubscribedListInput, type ReadSubscribedListResult } from '../../image-lists/list-read.js';
import type { ReadRegistryProject } from '../../oci/source.js';
import { projectRead, type ProjectReadInput } from '../../oci/project-read.js';
import { ROOT } from '../support/cli.js';
import { mockedSyncSubscription, type MockedSyncSteps } from '../support/sync-run-mock.js';
import { HISTORIES, stableHistory } from '../support/histories.js';
import { uniqueTaskQueue } from '../support/service-process.js';
import { TEMPORAL_CLI } from '../support/temporal-server.js';

/**
 * The workflows' branches with mocked activities on the real dev server: how a revision's
 * coordinator lets the last event win, how a registration waits for disk space, moves when its
 * host is gone, or registers on a Glance cloud, and how a subscription's sync plans and delivers
 * (a list read and verified, a list answered 304, a refused list, a registry project).
 *
 * Histories of these runs are kept in test/fixtures/histories/ for the replay test
 * (test/unit/workflow-replay.test.ts), so a change that breaks running workflows fails CI. The
 * replay compares the workflow's commands, not what the activities did, so mocked activities
 * record as good a history as real ones. Record with SNF_VMCATCHER_RECORD_HISTORIES=1 (the
 * command is in test/support/histories.ts), and only the tests whose histories are new (`-t`):
 * a history recorded from older code is what keeps that older code's running workflows safe.
 */

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

  /** A Synnefo site's delivery (kamaki cloud `mock`), or a Glance site's (`glance-mock`: no kamaki cloud). */
  async function deliver(
    queue: string,
    action: 'register' | 'expire',
    event: ImageEvent = imageOn(queue),
    target: 'synnefo-mock' | 'glance-mock' = 'synnefo-mock',
  ): Promise<WorkflowHandle> {
    const options = target === 'synnefo-mock' ? { kamakiCloud: 'mock' } : {};
    const signal: ImageEventSignal = { action, event, options, target };
    return client.workflow.signalWithStart(IMAGE_REVISION_WORKFLOW, {
      taskQueue: queue,
      workflowId: imageRevisionWorkflowId(event, action, target),
      args: [],
      signal: IMAGE_EVENT_SIGNAL,
      signalArgs: [signal],
      typedSearchAttributes: new TypedSearchAttributes([{ key: SA_STAGE, value: 'queued' }]),
    });
  }

  /**
   * With SNF_VMCATCHER_RECORD_HISTORIES=1, keeps the histories of every workflow the test ran on
   * its queue (the coordinator and its children; or only the run `only` names) as replay fixtures
   * `<name>.<workflow type>.json`, with the queue's random name made `mocked-<name>`. Record them
   * again only when a workflow change is meant to be incompatible (and say so in the commit).
   */
  async function keepHistory(
    name: string,
    queue: string,
    only?: { workflowId: string; runId?: string },
  ): Promise<void> {
    if (process.env.SNF_VMCATCHER_RECORD_HISTORIES !== '1') return;
    for await (const wf of client.workflow.list({ query: `TaskQueue = '${queue}'` })) {
      if (only && (wf.workflowId !== only.workflowId || (only.runId && wf.runId !== only.runId))) continue;
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
      await writeFile(
        path.join(HISTORIES, `${name}.${wf.type}.json`),
        stableHistory(shown.stdout, queue, `mocked-${name}`),
      );
    }
  }

  /** Waits until `check` holds, running `refresh` (when given) before each look. */
  const waitFor = async (what: string, check: () => boolean, timeoutMs = 20_000, refresh?: () => Promise<void>) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await refresh?.();
      if (check()) return;
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

  test('a Glance site registers the image as the qcow2 its cloud takes: no kamaki cloud, the convert keeps the format', async () => {
    const c = calls();
    const published: Array<{ path: string; options: object }> = [];
    const prepared: string[] = [];
    const result = await withWorker(
      baseActivities('unused', c, {
        claimHost: async () => claimFor(Context.current().info.taskQueue),
        convertToRaw: async () => (
          count(c, 'convertToRaw'),
          {
            path: '/w/img.qcow2',
            format: 'qcow2',
            virtualSize: 1,
            bytes: 1,
            steps: ['qcow2 kept (the cloud takes it)'],
          }
        ),
        prepareImage: async (input: { rawPath: string }) => {
          prepared.push(input.rawPath);
          return { path: input.rawPath, metadata: {}, prepared: false };
        },
        registerWithKamaki: async (input: { path: string; options: object }) => {
          published.push(input);
          return {
            imageId: 'glance-image',
            name: 'img',
            location: 'https://glance.example/v2/images/glance-image',
            reused: false,
            isPublic: true,
            visibility: 'public',
            diskFormat: 'qcow2',
            properties: {},
          };
        },
      }),
      async (queue) => {
        const parent = await deliver(queue, 'register', imageOn(queue), 'glance-mock');
        const r = (await parent.result()) as ImageRevisionResult;
        await keepHistory('register-glance', queue);
        return r;
      },
    );
    expect(result).toMatchObject({
      action: 'register',
      register: { imageId: 'glance-image', format: 'qcow2', location: 'https://glance.example/v2/images/glance-image' },
    });
    expect(prepared).toEqual(['/w/img.qcow2']);
    expect(published).toEqual([expect.objectContaining({ path: '/w/img.qcow2', options: {} })]);
    expect(c).toMatchObject({ acquireImage: 1, convertToRaw: 1, cleanupWorkspace: 1, releaseHostSlot: 1 });
  });

  const listed = (imageId: string, sha: string, expired = false): ListedImage => ({
    event: ImageEventSchema.parse({
      origin: 'image-list',
      imageListId: 'list-mocked',
      imageId,
      title: `Image ${imageId}`,
      version: '1',
      uri: `https://example.org/${imageId}.qcow2`,
      checksumSha512: sha.repeat(128),
    }),
    expired,
  });

  /** What the cloud holds for a listed image, as the inventory reports it. */
  const inCloud = (image: ListedImage, isPublic = true): CloudImage => ({
    cloudImageId: `cloud-${image.event.imageId}`,
    imageId: imageIdentity(image.event).imageId,
    revision: imageIdentity(image.event).revision,
    checksumSha512: image.event.checksumSha512,
    isPublic,
  });

  /** A registry image as a project read gives it: its layer's digest is its revision. */
  const registryLayer = (imageId: string, sha: string): ListedImage => ({
    event: ImageEventSchema.parse({
      origin: 'registry',
      imageListId: 'registry.example/project',
      imageId,
      title: imageId,
      version: 'latest',
      uri: `https://registry.example/v2/project/${imageId}/blobs/sha256:${sha.repeat(64)}`,
      checksumSha256: sha.repeat(64),
    }),
    expired: false,
  });

  const registrySpec = (url: string): SubscriptionSpec => ({
    url,
    source: 'registry',
    registry: { registry: 'https://registry.example', project: 'project' },
    endorsers: [],
    everyMs: 86_400_000,
    origin: 'config',
  });

  const listSpec = (url: string): SubscriptionSpec => ({
    url,
    endorsers: [],
    everyMs: 3_600_000,
    cloud: 'mock',
    origin: 'config',
  });

  /**
   * The subscription steps of a sync run, mocked: the list or project read (the sources' own reads
   * around a mocked reader of the list or the project), the cloud's inventory, the deliveries.
   */
  function syncActivities(
    c: Calls,
    delivered: ImageEvent[][],
    cloud: () => CloudImage[],
    overrides: Record<string, (...args: never[]) => Promise<unknown>> = {},
  ) {
    const readers = {
      readSubscribedList: async () => {
        throw new Error('this run reads no image list');
      },
      readSubscribedRegistry: async () => {
        throw new Error('this run reads no registry project');
      },
      ...overrides,
    } as unknown as {
      readSubscribedList: (input: ReadSubscribedListInput) => Promise<ReadSubscribedListResult>;
      readSubscribedRegistry: (input: ProjectReadInput) => Promise<ReadRegistryProject>;
    };
    const steps = {
      readSubscription: (input: SubscriptionReadInput) =>
        input.subscription.registry
          ? projectRead(readers.readSubscribedRegistry, input)
          : listRead(readers.readSubscribedList, input),
      cloudInventory: async () => (count(c, 'cloudInventory'), { images: cloud(), expireAction: 'make-private' }),
      deliverImageEvents: async ({ events }: { events: ImageEvent[] }) => {
        delivered.push(events);
        return events.map((e, i) => `delivered-${delivered.length}-${i}`);
      },
      ...overrides,
    } as unknown as MockedSyncSteps;
    // A run does it all in one step (syncSubscription), made here of the mocked steps.
    return { ...steps, syncSubscription: mockedSyncSubscription(steps) };
  }

  /**
   * Runs a sync `count` times from a paused schedule, each triggered as `sync-now` does it
   * (BUFFER_ONE), so each run gets the one before's result as its last completion result.
   */
  async function scheduledRuns(
    queue: string,
    input: SyncImageListInput,
    count: number,
  ): Promise<Array<{ result: SyncImageListResult; workflowId: string; runId: string }>> {
    const schedule = await client.schedule.create({
      scheduleId: `sync-${queue}`,
      spec: { intervals: [{ every: '1 day' }] },
      action: {
        type: 'startWorkflow',
        workflowType: SYNC_WORKFLOW,
        workflowId: `sync:${queue}`,
        taskQueue: queue,
        args: [input],
      },
      state: { paused: true, note: 'triggered by the test only' },
    });
    try {
      const runs = [];
      for (let n = 1; n <= count; n++) {
        await schedule.trigger(ScheduleOverlapPolicy.BUFFER_ONE);
        let action: { workflowId: string; firstExecutionRunId: string } | undefined;
        await waitFor(
          `sync run ${n} to start`,
          () => action !== undefined,
          60_000,
          async () => {
            const recent = (await schedule.describe()).info.recentActions;
            if (recent.length >= n) action = recent[n - 1]!.action.workflow;
          },
        );
        const handle = client.workflow.getHandle(action!.workflowId, action!.firstExecutionRunId);
        const result = (await handle.result()) as SyncImageListResult;
        // The schedule keeps a run's result for the next one once it has seen the run close.
        let running = 1;
        await waitFor(
          `the schedule to see sync run ${n} close`,
          () => running === 0,
          60_000,
          async () => void (running = (await schedule.describe()).info.runningActions.length),
        );
        runs.push({ result, workflowId: action!.workflowId, runId: action!.firstExecutionRunId });
      }
      return runs;
    } finally {
      await schedule.delete();
    }
  }

  test('a list sync registers new images and expires dropped ones; the next run, answered 304, reconciles the accepted copy', async () => {
    const c = calls();
    const delivered: ImageEvent[][] = [];
    const [a, b, dropped] = [listed('a', 'a'), listed('b', 'b'), listed('dropped', 'd')];
    // Before the first run the cloud holds b (unchanged) and an image the list no longer names;
    // after it, the dropped one is private and a is still being registered.
    let cloud = [inCloud(b), inCloud(dropped)];
    const previousSeen: unknown[] = [];
    let reads = 0;
    const activities = syncActivities(c, delivered, () => cloud, {
      readSubscribedList: async ({ previous }: { previous?: unknown }) => {
        previousSeen.push(previous);
        reads++;
        if (reads > 1) return { notModified: true };
        return {
          notModified: false,
          list: { identifier: 'list-mocked', version: '1' },
          images: [a, b],
          invalid: [{ identifier: 'broken', problem: 'no hv:uri' }],
          etag: '"v1"',
        };
      },
      deliverImageEvents: async ({ events }: { events: ImageEvent[] }) => {
        delivered.push(events);
        if (delivered.length === 1) cloud = [inCloud(b), inCloud(dropped, false)];
        return events.map((e, i) => `delivered-${delivered.length}-${i}`);
      },
    });
    const [first, second] = await withWorker(activities, async (queue) => {
      const input: SyncImageListInput = { subscription: listSpec(`https://lists.example/${queue}.xml`) };
      const [one, two] = await scheduledRuns(queue, input, 2);
      await keepHistory('bounded-sync-list-changed', queue, one);
      await keepHistory('bounded-sync-list-not-modified', queue, two);
      return [one!.result, two!.result];
    });
    expect(first.summary).toMatchObject({
      fetched: 'changed',
      listId: 'list-mocked',
      registered: [{ imageId: 'a', reason: 'new', workflowId: 'delivered-1-0' }],
      expired: [{ imageId: 'dropped', reason: 'removed', workflowId: 'delivered-1-1' }],
      unchanged: 1,
      invalid: [{ identifier: 'broken', problem: 'no hv:uri' }],
    });
    expect(delivered[0]!.map((e) => [e.imageId, e.type ?? 'Available'])).toEqual([
      ['a', 'Available'],
      ['dropped', 'ExpirePostfix'],
    ]);
    // The second read is conditional on the first's validators; 304 keeps the accepted copy.
    expect(previousSeen).toEqual([undefined, { listId: 'list-mocked', version: '1', etag: '"v1"' }]);
    expect(second.summary).toMatchObject({
      fetched: 'not-modified',
      registered: [{ imageId: 'a', reason: 'missing-from-cloud' }],
      expired: [],
      unchanged: 1,
    });
    expect(second.accepted).toEqual(first.accepted);
    expect(c.cloudInventory).toBe(2);
  });

  test('a refused list fails the sync run as ImageListRejected, before the cloud is asked anything', async () => {
    const c = calls();
    const delivered: ImageEvent[][] = [];
    const failure = await withWorker(
      syncActivities(c, delivered, () => [], {
        readSubscribedList: async () => {
          throw ApplicationFailure.nonRetryable(
            'image list https://lists.example/refused.xml refused: the list expired on 2020-01-01 (dc:date:expires)',
            LIST_REJECTED,
          );
        },
      }),
      async (queue) => {
        const handle = await client.workflow.start(SYNC_WORKFLOW, {
          taskQueue: queue,
          workflowId: `sync:${queue}`,
          args: [{ subscription: listSpec('https://lists.example/refused.xml') } satisfies SyncImageListInput],
        });
        const err = await handle.result().then(
          () => undefined,
          (e: unknown) => e,
        );
        await keepHistory('bounded-sync-list-refused', queue);
        return err;
      },
    );
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    const cause = (failure as WorkflowFailedError).cause?.cause;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    expect((cause as ApplicationFailure).type).toBe(LIST_REJECTED);
    expect(c.cloudInventory).toBeUndefined();
    expect(delivered).toEqual([]);
  });

  test('a registry sync reads the project on every run and registers its new digests, reporting the tags it cannot take', async () => {
    const c = calls();
    const delivered: ImageEvent[][] = [];
    const [kept, fresh] = [registryLayer('project/kept', 'e'), registryLayer('project/fresh', 'f')];
    const result = await withWorker(
      syncActivities(c, delivered, () => [inCloud(kept)], {
        readSubscribedRegistry: async ({ subscription }: { subscription: SubscriptionSpec }) => {
          count(c, 'readSubscribedRegistry');
          expect(subscription.registry?.project).toBe('project');
          return {
            listId: 'registry.example/project',
            images: [kept, fresh],
            invalid: [{ identifier: 'project/helm:1', problem: 'not a disk image artifact' }],
            unread: [],
          };
        },
      }),
      async (queue) => {
        const subscription: SubscriptionSpec = {
          url: 'https://registry.example/project',
          source: 'registry',
          registry: { registry: 'https://registry.example', project: 'project' },
          credential: 'registry-login',
          endorsers: [],
          everyMs: 3_600_000,
          origin: 'config',
        };
        const handle = await client.workflow.start(SYNC_WORKFLOW, {
          taskQueue: queue,
          workflowId: `sync:${queue}`,
          args: [{ subscription } satisfies SyncImageListInput],
        });
        const r = (await handle.result()) as SyncImageListResult;
        await keepHistory('bounded-sync-registry', queue);
        return r;
      },
    );
    expect(result.summary).toMatchObject({
      fetched: 'changed',
      listId: 'registry.example/project',
      registered: [{ imageId: 'project/fresh', reason: 'new' }],
      expired: [],
      unchanged: 1,
      invalid: [{ identifier: 'project/helm:1', problem: 'not a disk image artifact' }],
    });
    expect(delivered).toEqual([[fresh.event]]);
    expect(c).toMatchObject({ readSubscribedRegistry: 1, cloudInventory: 1 });
  });

  test("a registry answering an empty project (Harbor's 200 []) expires nothing: the mass-expiry guard stops the run before delivering", async () => {
    const c = calls();
    const delivered: ImageEvent[][] = [];
    const registered = [registryLayer('project/a', 'a'), registryLayer('project/b', 'b')];
    const activities = syncActivities(c, delivered, () => registered.map((i) => inCloud(i)), {
      readSubscribedRegistry: async () => ({ listId: 'registry.example/project', images: [], invalid: [], unread: [] }),
    });
    const failure = await withWorker(activities, async (queue) => {
      const subscription = registrySpec(`https://registry.example/project-${queue}`);
      return client.workflow
        .execute(SYNC_WORKFLOW, { taskQueue: queue, workflowId: `sync:${queue}`, args: [{ subscription }] })
        .catch((err: unknown) => err);
    });
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    const cause = (failure as WorkflowFailedError).cause as ApplicationFailure;
    expect(cause.type).toBe(MASS_EXPIRY_REFUSED);
    expect(cause.message).toContain('would expire 2 of the 2 images registered from registry.example/project');
    expect(delivered).toEqual([]);
  });

  test("a registry sync hands the digests its tags named to the next run's read, and its summary says how many requests the read made", async () => {
    const c = calls();
    const delivered: ImageEvent[][] = [];
    const image = registryLayer('project/kept', 'e');
    const digest = (n: string) => `sha256:${n.repeat(64)}`;
    const reads = [
      {
        manifests: { kept: { '1': digest('a'), latest: digest('a') } },
        requests: { total: 5, conditional: 0, notModified: 0, tokens: 0 },
      },
      {
        manifests: { kept: { '1': digest('a'), latest: digest('a') } },
        requests: { total: 5, conditional: 2, notModified: 2, tokens: 0 },
      },
    ];
    const manifestsSeen: unknown[] = [];
    const activities = syncActivities(c, delivered, () => [inCloud(image)], {
      readSubscribedRegistry: async ({ manifests }: { manifests?: unknown }) => {
        manifestsSeen.push(manifests);
        return {
          listId: 'registry.example/project',
          images: [image],
          invalid: [],
          unread: [],
          ...reads[manifestsSeen.length - 1]!,
        };
      },
    });
    const results = await withWorker(activities, async (queue) => {
      const subscription = registrySpec(`https://registry.example/project-${queue}`);
      return (await scheduledRuns(queue, { subscription }, 2)).map((r) => r.result);
    });
    expect(manifestsSeen).toEqual([undefined, reads[0]!.manifests]);
    expect(results.map((r) => r.summary.requests)).toEqual([reads[0]!.requests, reads[1]!.requests]);
    expect(results[1]!.accepted?.manifests).toEqual(reads[1]!.manifests);
    expect(delivered).toEqual([]);
  });

  test('a repository whose read failed keeps its image, in the cloud and in the accepted copy the next run compares against', async () => {
    const c = calls();
    const delivered: ImageEvent[][] = [];
    const [kept, other] = [registryLayer('project/kept', 'e'), registryLayer('project/other', 'f')];
    const previousSeen: Array<string[] | undefined> = [];
    const reads = [
      { images: [kept, other], unread: [] },
      { images: [other], unread: [{ imageId: 'project/kept', problem: 'tags/list answered HTTP 503' }] },
      { images: [kept, other], unread: [] },
    ];
    const activities = syncActivities(c, delivered, () => [inCloud(kept), inCloud(other)], {
      readSubscribedRegistry: async ({ previous }: { previous?: ListedImage[] }) => {
        previousSeen.push(previous?.map((i) => i.event.imageId!).sort());
        return { listId: 'registry.example/project', invalid: [], ...reads[previousSeen.length - 1]! };
      },
    });
    const results = await withWorker(activities, async (queue) => {
      const subscription = registrySpec(`https://registry.example/project-${queue}`);
      return (await scheduledRuns(queue, { subscription }, 3)).map((r) => r.result);
    });
    expect(results[1]!.summary).toMatchObject({
      expired: [],
      unread: [{ imageId: 'project/kept', problem: 'tags/list answered HTTP 503' }],
    });
    expect(delivered).toEqual([]);
    // The run after the failed read still gets the kept image as accepted before.
    expect(previousSeen).toEqual([undefined, ['project/kept', 'project/other'], ['project/kept', 'project/other']]);
  });
});
