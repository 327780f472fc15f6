import os from 'node:os';
import { ApplicationFailure } from '@temporalio/common';
import { cloudTargets } from '../clouds/index.js';
import { hostControlQueue, hostTaskQueue } from '../core/config.js';
import type { ImageEvent } from '../core/event.js';
import { eventToFlat } from '../core/event.js';
import type { HostClaim, ImageRequest, RegistrationOptions } from '../core/workflow-contract.js';
import { whileHeartbeating } from '../runtime/heartbeats.js';
import { createSubscriptionActivities } from './subscriptions.js';
import type { ActivityDeps } from '../runtime/deps.js';
import type { Client } from '@temporalio/client';

interface SharedActivityDeps extends ActivityDeps {
  /** The worker's Temporal client, for the steps that start workflows (a subscription's sync). */
  temporal: () => Promise<Client>;
}

/**
 * The activities of the shared task queue, which any worker may pick up: the steps that touch no
 * file (ask the cloud, claim a host, a subscription's sync, the original test handlers).
 */
export function createSharedActivities(deps: SharedActivityDeps) {
  const { config, logger } = deps;
  const clouds = cloudTargets(deps);
  return {
    /**
     * Whichever worker picks this up will hold the image's files; the claim carries the disk formats
     * of the registration's cloud (its options; absent in histories recorded before: the site's cloud).
     */
    async claimHost(input?: { options: RegistrationOptions }): Promise<HostClaim> {
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
        diskFormats: [...clouds.of(input?.options ?? {}).diskFormats],
      };
    },

    /** The original JustLogHandler: record the event, touch nothing. */
    async logEvent({ event, handler }: { event: ImageEvent; handler: string }): Promise<void> {
      logger.info({ handler, event: eventToFlat(event) }, 'event received (JustLogHandler: nothing registered)');
    },

    /** The original ThrowingHandler, for exercising failure paths. */
    async throwOnPurpose({ event }: { event: ImageEvent }): Promise<never> {
      throw ApplicationFailure.retryable(
        `ThrowingHandler fails on purpose for image ${event.imageId ?? '(no id)'}`,
        'ThrowingHandler',
      );
    },

    // The cloud's answer may take a while (a long image list): they heartbeat, so a worker that
    // dies while asking is noticed after the heartbeat timeout and another one asks again.
    findRegisteredImage: (req: ImageRequest) =>
      whileHeartbeating({ step: 'look for the image on the cloud' }, () => clouds.of(req.options).findImage(req)),
    expireRegisteredImages: (req: ImageRequest) =>
      whileHeartbeating({ step: 'expire the image on the cloud' }, () => clouds.of(req.options).expire(req)),
    ...createSubscriptionActivities({ ...deps, clouds }),
  };
}

export type SharedActivities = ReturnType<typeof createSharedActivities>;
