/**
 * Subscriptions synced by a worker in this process, on the real Temporal dev server: the real
 * workflows (bundled from the source) and the real `syncSubscription` step (the source's read, the
 * cloud's inventory, the plan, the deliveries: activities/subscriptions.ts) on a task queue of
 * their own, each run started by a real Schedule as `sync-now` starts it, so that each run gets
 * the copy the run before carried. The deliveries go where the configuration says
 * (`temporal.taskQueue`): a queue no worker polls, so the image revision workflows they start
 * wait there and a test watches the sync alone; `stop` terminates them.
 */
import path from 'node:path';
import { Client, Connection, ScheduleOverlapPolicy, type WorkflowHandle } from '@temporalio/client';
import {
  bundleWorkflowCode,
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';
import { createSubscriptionActivities } from '../../activities/subscriptions.js';
import { firstNewRun } from '../../subscriptions/schedules.js';
import { cloudTargets } from '../../clouds/index.js';
import type { Config } from '../../core/config.js';
import {
  SYNC_WORKFLOW,
  type SubscriptionSpec,
  type SyncImageListInput,
  type SyncImageListResult,
} from '../../core/workflow-contract.js';
import { ROOT } from './cli.js';
import { historyPayloadSizes, runsMatching, type PayloadSize } from './history-payloads.js';
import { quietLogger } from './pipeline-fixtures.js';
import { uniqueTaskQueue } from './service-process.js';

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;

export interface SyncWorker {
  client: Client;
  /** Where the sync runs and its step run. */
  taskQueue: string;
  /** Triggers the subscription's schedule (made on first use) and gives the run it started, once started. */
  trigger(spec: SubscriptionSpec): Promise<WorkflowHandle>;
  /** Triggers a run and waits for its result. */
  syncNow(spec: SubscriptionSpec): Promise<{ handle: WorkflowHandle; result: SyncImageListResult }>;
  /** The size of every payload in the histories of the sync runs. */
  payloads(): Promise<PayloadSize[]>;
  /** Stops the worker, deletes the schedules, terminates what the deliveries started. */
  stop(): Promise<void>;
}

/**
 * Starts the worker. `temporal` is the Temporal client the step delivers with (by default the
 * test's own); the worker heartbeats as `snf-vmcatcher worker` does for `config`.
 */
export async function startSyncWorker(
  config: Config,
  opts: { temporal?: () => Promise<Client> } = {},
): Promise<SyncWorker> {
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    // Installed already in this process.
  }
  bundle ??= bundleWorkflowCode({
    workflowsPath: path.join(ROOT, 'workflows/index.ts'),
    logger: new DefaultLogger('WARN'),
  });
  const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS });
  const clientConnection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  const client = new Client({ connection: clientConnection });
  const taskQueue = uniqueTaskQueue('sync');
  const logger = quietLogger;
  const activities = createSubscriptionActivities({
    config,
    logger,
    temporal: opts.temporal ?? (async () => client),
    clouds: cloudTargets({ config, logger }),
  });
  // As worker/worker.ts: a quarter of the heartbeat timeout between two heartbeats sent.
  const throttle = Math.max(100, Math.floor(config.worker.heartbeatTimeoutMs / 4));
  const worker = await Worker.create({
    connection,
    taskQueue,
    workflowBundle: await bundle,
    activities,
    maxHeartbeatThrottleInterval: throttle,
    defaultHeartbeatThrottleInterval: throttle,
  });
  const running = worker.run();
  const schedules = new Map<string, string>();

  const trigger = async (spec: SubscriptionSpec): Promise<WorkflowHandle> => {
    let scheduleId = schedules.get(spec.url);
    if (!scheduleId) {
      scheduleId = `test-sync:${taskQueue}:${schedules.size}`;
      const input: SyncImageListInput = { subscription: spec };
      await client.schedule.create({
        scheduleId,
        // Aligned to the epoch: never fires during a test.
        spec: { intervals: [{ every: '8760h' }] },
        action: {
          type: 'startWorkflow',
          workflowType: SYNC_WORKFLOW,
          workflowId: `sync:${scheduleId}`,
          taskQueue,
          args: [input],
        },
        policies: { overlap: ScheduleOverlapPolicy.SKIP },
      });
      schedules.set(spec.url, scheduleId);
    }
    const handle = client.schedule.getHandle(scheduleId);
    const before = (await handle.describe()).info.recentActions;
    await handle.trigger(ScheduleOverlapPolicy.BUFFER_ONE);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const started = firstNewRun(before, (await handle.describe()).info.recentActions);
      if (started) return client.workflow.getHandle(started.workflowId, started.firstExecutionRunId);
      if (Date.now() > deadline) throw new Error(`the schedule ${scheduleId} started no run within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  return {
    client,
    taskQueue,
    trigger,
    async syncNow(spec) {
      const handle = await trigger(spec);
      return { handle, result: (await handle.result()) as SyncImageListResult };
    },
    async payloads() {
      const runs = await runsMatching(client, `TaskQueue = '${taskQueue}'`);
      return (await Promise.all(runs.map((r) => historyPayloadSizes(client, r.workflowId, r.runId)))).flat();
    },
    async stop() {
      for (const scheduleId of schedules.values())
        await client.schedule
          .getHandle(scheduleId)
          .delete()
          .catch(() => undefined);
      worker.shutdown();
      await running;
      const delivered = await runsMatching(
        client,
        `TaskQueue = '${config.temporal.taskQueue}' AND ExecutionStatus = 'Running'`,
      );
      for (const run of delivered)
        await client.workflow
          .getHandle(run.workflowId, run.runId)
          .terminate('the test is over')
          .catch(() => undefined);
      await clientConnection.close();
      await connection.close();
    },
  };
}
