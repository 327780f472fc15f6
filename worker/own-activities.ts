import os from 'node:os';
import { ApplicationFailure } from '@temporalio/common';
import { hostControlQueue, hostTaskQueue, type Config } from '../core/config.js';
import type { ImageEvent } from '../core/event.js';
import { eventToFlat } from '../core/event.js';
import type { Logger } from '../core/logging.js';
import type { HostClaim } from '../core/workflow-contract.js';

/** Activities that belong to the worker itself rather than to a pipeline step. */
export function createWorkerOwnActivities({ config, logger }: { config: Config; logger: Logger }) {
  return {
    /** Runs on the shared queue; whichever worker picks it up will hold the image's files. */
    async claimHost(): Promise<HostClaim> {
      const w = config.worker;
      return {
        taskQueue: hostTaskQueue(config),
        controlQueue: hostControlQueue(config),
        hostname: os.hostname(),
        heartbeatTimeoutMs: w.heartbeatTimeoutMs,
        downloadTimeoutMs: w.downloadTimeoutMs,
        toolTimeoutMs: w.toolTimeoutMs,
        scheduleToStartTimeoutMs: w.hostScheduleToStartTimeoutMs,
        retryInitialIntervalMs: w.retryInitialIntervalMs,
        retryMaximumIntervalMs: w.retryMaximumIntervalMs,
        retryMaximumAttempts: w.retryMaximumAttempts,
        diskWaitIntervalMs: w.diskWaitIntervalMs,
        diskWaitMaxMs: w.diskWaitMaxMs,
      };
    },

    /** The original JustLogHandler: record the event, touch nothing. */
    async logEvent({ event, handler }: { event: ImageEvent; handler: string }): Promise<void> {
      logger.info({ handler, event: eventToFlat(event) }, 'event received (JustLogHandler: nothing registered)');
    },

    /** The original ThrowingHandler, for exercising failure paths. */
    async throwOnPurpose({ event }: { event: ImageEvent }): Promise<never> {
      throw ApplicationFailure.retryable(`ThrowingHandler fails on purpose for image ${event.imageId ?? '(no id)'}`, 'ThrowingHandler');
    },
  };
}

export type WorkerOwnActivities = ReturnType<typeof createWorkerOwnActivities>;
