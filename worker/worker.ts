import { existsSync } from 'node:fs';
import { NativeConnection, Runtime, Worker, type LogLevel, type LogMetadata } from '@temporalio/worker';
import { hostTaskQueue, type Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { buildActivities } from './activities.js';
import { WORKFLOW_BUNDLE, WORKFLOWS_PATH } from './bundle.js';

export interface RunningWorker {
  /** Asks both workers to stop taking tasks and let running activities finish (up to the grace time). */
  stop(): void;
  /** Resolves when both workers have shut down. */
  done: Promise<void>;
  sharedTaskQueue: string;
  hostTaskQueue: string;
}

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
  const connection = await NativeConnection.connect({
    address: config.temporal.address,
    tls: config.temporal.tls || undefined,
    apiKey: config.temporal.apiKey,
  });
  const activities = buildActivities(config, logger);
  const workflowSource = existsSync(WORKFLOW_BUNDLE)
    ? { workflowBundle: { codePath: WORKFLOW_BUNDLE } }
    : { workflowsPath: WORKFLOWS_PATH };
  const common = {
    connection,
    namespace: config.temporal.namespace,
    shutdownGraceTime: config.worker.shutdownGraceMs,
    shutdownForceTime: config.worker.shutdownGraceMs + 10_000,
  };
  const hostQueue = hostTaskQueue(config);
  const shared = await Worker.create({
    ...common,
    ...workflowSource,
    taskQueue: config.temporal.taskQueue,
    activities: activities.shared,
    maxConcurrentActivityTaskExecutions: config.worker.maxConcurrentActivities,
    maxConcurrentWorkflowTaskExecutions: config.worker.maxConcurrentWorkflowTasks,
  });
  const host = await Worker.create({
    ...common,
    taskQueue: hostQueue,
    activities: activities.host,
    maxConcurrentActivityTaskExecutions: config.worker.maxConcurrentFileSteps,
  });
  logger.info({ sharedTaskQueue: config.temporal.taskQueue, hostTaskQueue: hostQueue, address: config.temporal.address }, 'worker started');
  const done = Promise.all([shared.run(), host.run()]).then(
    async () => {
      await connection.close();
      logger.info('worker stopped');
    },
    async (err: unknown) => {
      await connection.close().catch(() => undefined);
      throw err;
    },
  );
  return {
    stop() {
      for (const w of [shared, host]) {
        if (w.getState() === 'RUNNING') w.shutdown();
      }
    },
    done,
    sharedTaskQueue: config.temporal.taskQueue,
    hostTaskQueue: hostQueue,
  };
}
