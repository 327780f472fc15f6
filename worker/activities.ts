import { Context } from '@temporalio/activity';
import { createControlActivities } from '../activities/control.js';
import { createHostActivities } from '../activities/host.js';
import { createSharedActivities } from '../activities/shared.js';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import type { Client } from '@temporalio/client';
import type { HostSlots } from './host-slots.js';

type ActivityMap = Record<string, (...args: never[]) => Promise<unknown>>;

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
 * The activities of one worker, by the queue they run on: `shared` on the shared task queue (any
 * worker), `host` on this worker's own queue (they read or write the image's files here), and
 * `control` on this host's control queue (its slots). Their errors are classified by the
 * worker's interceptor (worker/failures.ts `classifyFailures`).
 */
export function buildActivities(config: Config, logger: Logger, slots: HostSlots, temporal: () => Promise<Client>) {
  const shared = createSharedActivities({ config, logger: logger.child({ component: 'shared' }), temporal });
  // Not a slot holder's step: the clean-up also runs after the image gave its slot back, or moved away.
  const { cleanupWorkspace, ...fileSteps } = createHostActivities({
    config,
    logger: logger.child({ component: 'host' }),
  });
  return {
    shared,
    host: { ...adoptingSlots(fileSteps, slots), cleanupWorkspace },
    control: createControlActivities({ slots }),
  };
}
