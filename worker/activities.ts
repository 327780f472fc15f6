import { Context } from '@temporalio/activity';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { classified } from '../activities/failures.js';
import { createImagePipelineActivities } from '../activities/image-pipeline.js';
import { createSynnefoActivities } from '../activities/synnefo.js';
import { createSubscriptionActivities } from '../activities/subscriptions.js';
import type { Client } from '@temporalio/client';
import { createControlActivities } from './control-activities.js';
import type { HostSlots } from './host-slots.js';
import { createWorkerOwnActivities } from './own-activities.js';

type ActivityMap = Record<string, (...args: never[]) => Promise<unknown>>;

function classifyAll<T extends ActivityMap>(activities: T): T {
  return Object.fromEntries(Object.entries(activities).map(([name, fn]) => [name, classified(fn)])) as T;
}

/** Every file step counts its image as a slot holder: after a restart, the images that were running come back first. */
function adoptingSlots<T extends ActivityMap>(activities: T, slots: HostSlots): T {
  return Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [
      name,
      (...args: never[]) => {
        const workflowId = Context.current().info.workflowExecution?.workflowId;
        if (workflowId) slots.adopt(workflowId);
        return fn(...args);
      },
    ]),
  ) as T;
}

/**
 * The activities of one worker, split by where they run: `shared` on the shared task queue (any
 * worker), `host` on this worker's own queue (they read or write the image's files here), and
 * `control` on this host's control queue (its slots).
 */
export function buildActivities(config: Config, logger: Logger, slots: HostSlots, temporal: () => Promise<Client>) {
  const pipeline = createImagePipelineActivities({ config, logger: logger.child({ component: 'pipeline' }) });
  const synnefo = createSynnefoActivities({ config, logger: logger.child({ component: 'synnefo' }) });
  const own = createWorkerOwnActivities({ config, logger: logger.child({ component: 'worker' }) });
  return {
    shared: classifyAll({
      claimHost: own.claimHost,
      logEvent: own.logEvent,
      throwOnPurpose: own.throwOnPurpose,
      ...createSubscriptionActivities({ config, logger, temporal }),
      findRegisteredImage: synnefo.findRegisteredImage,
      expireRegisteredImages: synnefo.expireRegisteredImages,
    }),
    host: {
      ...adoptingSlots(
        classifyAll({
          acquireImage: pipeline.acquireImage,
          inspectImage: pipeline.inspectImage,
          convertToRaw: pipeline.convertToRaw,
          prepareImage: synnefo.prepareImage,
          registerWithKamaki: synnefo.registerWithKamaki,
        }),
        slots,
      ),
      // Not a slot holder's step: it also runs after the image gave its slot back, or moved away.
      ...classifyAll({ cleanupWorkspace: pipeline.cleanupWorkspace }),
    },
    control: classifyAll(createControlActivities({ slots })),
  };
}
