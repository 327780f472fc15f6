import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { NativeConnection, Runtime, Worker, type LogLevel, type LogMetadata } from '@temporalio/worker';
import { hostControlQueue, hostTaskQueue, type Config } from '../core/config.js';
import { connectTemporal, temporalConnectionOptions } from '../core/temporal-client.js';
import { applySubscriptions } from '../subscriptions/schedules.js';
import type { Logger } from '../core/logging.js';
import { classifyFailures } from './failures.js';
import { reclaimIdleVerifiedFilesWhenShort, VERIFIED_FOLDER } from '../activities/verified-files.js';
import { buildActivities } from './activities.js';
import { WORKFLOW_BUNDLE, WORKFLOW_INTERCEPTORS, WORKFLOWS_PATH } from './bundle.js';
import { auditSlots, every, sweepWorkFolders } from './housekeeping.js';
import { HostSlots } from './host-slots.js';
import { createWorkerMetrics } from './metrics.js';
import { DiskWaits, measureSteps, outcomeSinks, subscriptionsInTemporal } from './outcome-metrics.js';
import { serveMetrics } from '../bridge/metrics.js';

export interface RunningWorker {
  /** Asks both workers to stop taking tasks and let running activities finish (up to the grace time). */
  stop(): void;
  /** Resolves when both workers have shut down. */
  done: Promise<void>;
  /** The port the product metrics listen on, when served (worker.productMetricsPort). */
  productMetricsPort?: number;
  sharedTaskQueue: string;
  hostTaskQueue: string;
  controlTaskQueue: string;
}

/** Slot requests wait on the control queue; each is a promise and a heartbeat, so many fit. */
const CONTROL_CONCURRENCY = 1000;

let runtimeInstalled = false;

/** The SDK's own logs go through our logger, and its metrics to Prometheus when a port is set. */
function installRuntime(config: Config, logger: Logger): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const sdkLog = logger.child({ component: 'temporal-sdk' });
  const levels: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
    TRACE: 'trace',
    DEBUG: 'debug',
    INFO: 'info',
    WARN: 'warn',
    ERROR: 'error',
  };
  const emit = (level: LogLevel, message: string, meta?: LogMetadata) => sdkLog[levels[level]](meta ?? {}, message);
  Runtime.install({
    logger: {
      log: emit,
      trace: (m, meta) => emit('TRACE', m, meta),
      debug: (m, meta) => emit('DEBUG', m, meta),
      info: (m, meta) => emit('INFO', m, meta),
      warn: (m, meta) => emit('WARN', m, meta),
      error: (m, meta) => emit('ERROR', m, meta),
    },
    telemetryOptions:
      config.worker.metricsPort > 0
        ? { metrics: { prometheus: { bindAddress: `0.0.0.0:${config.worker.metricsPort}` } } }
        : undefined,
  });
}

/**
 * Runs the two workers of one host: the shared task queue (workflows and the steps that need
 * no file) and this host's own queue (every step that touches the image file), so the whole
 * file-bound sequence of one image stays on the machine that holds its files.
 */
export async function startWorker({ config, logger }: { config: Config; logger: Logger }): Promise<RunningWorker> {
  installRuntime(config, logger);
  const connection = await NativeConnection.connect(temporalConnectionOptions(config.temporal));
  // In a deployment of several clouds, one revision's registrations share a slot (worker/host-slots.ts).
  const clouds = Math.max(1, Object.keys(config.clouds).length);
  const slots = new HostSlots(config.worker.maxConcurrentFileSteps, clouds > 1);
  if (await hasWorkFolders(config)) {
    // Images were running here when the worker stopped: their retried steps come back after a
    // heartbeat timeout and a retry interval. Keep their slots free for them until then.
    slots.holdBackUntil(Date.now() + config.worker.heartbeatTimeoutMs + config.worker.retryInitialIntervalMs + 5000);
  }
  const housekeeping = await connectTemporal(config.temporal);
  const activities = buildActivities(config, logger, slots, async () => housekeeping.client);
  const diskWaits = new DiskWaits();
  const metrics = createWorkerMetrics({
    slots: () => {
      const state = slots.state();
      return { capacity: state.capacity, held: state.holders.length, waiting: state.waiting.length };
    },
    waitingForDisk: () => diskWaits.size,
    subscriptions: subscriptionsInTemporal(async () => housekeeping.client, logger.child({ component: 'metrics' })),
  });
  const metricsServer =
    config.worker.productMetricsPort > 0
      ? await serveMetrics(metrics.registry, config.worker.productMetricsPort)
      : undefined;
  if (metricsServer)
    logger.info({ port: metricsServer.port }, `product metrics at http://0.0.0.0:${metricsServer.port}/metrics`);
  // The pre-built bundle has the outcome interceptor in it (worker/bundle.ts); from source it is added here.
  const workflowSource = existsSync(WORKFLOW_BUNDLE)
    ? { workflowBundle: { codePath: WORKFLOW_BUNDLE } }
    : { workflowsPath: WORKFLOWS_PATH, interceptors: { workflowModules: [WORKFLOW_INTERCEPTORS] } };
  const common = {
    connection,
    namespace: config.temporal.namespace,
    shutdownGraceTime: config.worker.shutdownGraceMs,
    shutdownForceTime: config.worker.shutdownGraceMs + 10_000,
    // The SDK sends at most one heartbeat per 0.8 × the timeout by default, which leaves a busy
    // event loop a fifth of the timeout to spare; the steps beat at a quarter (runtime/heartbeats.ts).
    maxHeartbeatThrottleInterval: Math.max(100, Math.floor(config.worker.heartbeatTimeoutMs / 4)),
    defaultHeartbeatThrottleInterval: Math.max(100, Math.floor(config.worker.heartbeatTimeoutMs / 4)),
    // Every activity's errors are classified here, once: retryable or not, typed, scrubbed of secrets;
    // the file steps are measured around that (worker/outcome-metrics.ts).
    interceptors: { activity: [measureSteps(metrics, diskWaits), classifyFailures] },
  };
  const hostQueue = hostTaskQueue(config);
  const shared = await Worker.create({
    ...common,
    ...workflowSource,
    interceptors: { ...common.interceptors, ...workflowSource.interceptors },
    sinks: outcomeSinks(metrics, config),
    taskQueue: config.temporal.taskQueue,
    activities: activities.shared,
    maxConcurrentActivityTaskExecutions: config.worker.maxConcurrentActivities,
    maxConcurrentWorkflowTaskExecutions: config.worker.maxConcurrentWorkflowTasks,
  });
  const host = await Worker.create({
    ...common,
    taskQueue: hostQueue,
    activities: activities.host,
    // Every holder of a slot runs its steps at once: a slot shared by revision has one per cloud.
    maxConcurrentActivityTaskExecutions: config.worker.maxConcurrentFileSteps * clouds,
  });
  const controlQueue = hostControlQueue(config);
  const control = await Worker.create({
    ...common,
    taskQueue: controlQueue,
    activities: activities.control,
    maxConcurrentActivityTaskExecutions: CONTROL_CONCURRENCY,
  });
  const workers = [shared, host, control];
  if (config.worker.applySubscriptions) {
    // Every worker makes the schedules match its configuration; a failure is logged, not fatal:
    // `subscriptions apply` does the same on demand.
    await applySubscriptions(housekeeping.client, config, logger.child({ component: 'subscriptions' })).catch(
      (err: unknown) =>
        logger.error({ err: String(err) }, 'could not make the subscription schedules match the configuration'),
    );
  }
  const housekeepingLog = logger.child({ component: 'housekeeping' });
  reclaimIdleVerifiedFilesWhenShort(config, housekeepingLog);
  const stopSweep = every(
    config.worker.sweepIntervalMs,
    () => sweepWorkFolders(housekeeping.client, config, housekeepingLog),
    housekeepingLog,
    'work folder sweep',
  );
  const stopAudit = every(
    config.worker.slotAuditIntervalMs,
    () => auditSlots(housekeeping.client, slots, housekeepingLog),
    housekeepingLog,
    'slot audit',
  );
  logger.info(
    {
      sharedTaskQueue: config.temporal.taskQueue,
      hostTaskQueue: hostQueue,
      controlTaskQueue: controlQueue,
      slots: slots.capacity,
      address: config.temporal.address,
    },
    'worker started',
  );
  const closeAll = async () => {
    stopSweep();
    stopAudit();
    await metricsServer?.close();
    await housekeeping.connection.close().catch(() => undefined);
  };
  const done = Promise.all(workers.map((w) => w.run())).then(
    async () => {
      await closeAll();
      await connection.close();
      logger.info('worker stopped');
    },
    async (err: unknown) => {
      await closeAll();
      await connection.close().catch(() => undefined);
      throw err;
    },
  );
  return {
    stop() {
      for (const w of workers) {
        if (w.getState() === 'RUNNING') w.shutdown();
      }
    },
    done,
    productMetricsPort: metricsServer?.port,
    sharedTaskQueue: config.temporal.taskQueue,
    hostTaskQueue: hostQueue,
    controlTaskQueue: controlQueue,
  };
}

async function hasWorkFolders(config: Config): Promise<boolean> {
  const entries = await readdir(config.worker.workingFolder, { withFileTypes: true }).catch(() => []);
  return entries.some((e) => e.isDirectory() && e.name !== VERIFIED_FOLDER);
}
