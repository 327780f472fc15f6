/**
 * The steps of a subscription's sync run (workflows/sync-image-list.ts): read the subscription
 * through its source (subscriptions/sources.ts), see what the cloud holds for it, and deliver the
 * events the plan decided to the image revisions' workflows, exactly as the bridge does.
 */
import type { Client } from '@temporalio/client';
import { registrationSite } from '../clouds/index.js';
import type { CloudInventory, CloudTarget, InventoryRequest } from '../clouds/target.js';
import type { ImageEvent } from '../core/event.js';
import type { SourceReadContext } from '../core/subscription-source.js';
import { startWorkflowForEvent } from '../core/starter.js';
import {
  SA_IMAGE_LIST_ID,
  SYNC_WORKFLOW,
  type RegistrationOptions,
  type SubscriptionRead,
  type SubscriptionReadInput,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';
import type { ReadSubscribedListInput } from '../image-lists/list-read.js';
import { listReader } from '../image-lists/subscription-source.js';
import type { ProjectReadInput } from '../oci/project-read.js';
import { readSubscribedProject } from '../oci/subscription-source.js';
import { cancellationSignal } from '../runtime/context.js';
import type { ActivityDeps } from '../runtime/deps.js';
import { keepHeartbeating } from '../runtime/heartbeats.js';
import { syncWorkflowIdPrefix } from '../subscriptions/schedules.js';
import { sourceOf } from '../subscriptions/sources.js';

interface SubscriptionDeps extends ActivityDeps {
  /** The worker's Temporal client, connected on first use. */
  temporal: () => Promise<Client>;
  cloud: CloudTarget;
}

/** A literal for a Temporal visibility query. */
function queryLiteral(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function createSubscriptionActivities({ config, logger, temporal, cloud }: SubscriptionDeps) {
  const log = logger.child({ component: 'subscriptions' });
  /** What a source's read runs with: the worker's configuration, the activity's cancellation, the other subscriptions' runs. */
  const readContext = (): SourceReadContext => ({
    config,
    logger: log,
    signal: cancellationSignal(),
    async syncedElsewhere(subscription: SubscriptionSpec, listId: string) {
      const client = await temporal();
      const ours = syncWorkflowIdPrefix(subscription);
      const query = [
        `WorkflowType = ${queryLiteral(SYNC_WORKFLOW)}`,
        `${SA_IMAGE_LIST_ID.name} = ${queryLiteral(listId)}`,
        `ExecutionStatus = 'Completed'`,
        `TaskQueue = ${queryLiteral(config.temporal.taskQueue)}`,
      ].join(' AND ');
      for await (const run of client.workflow.list({ query })) {
        if (run.workflowId.startsWith(`${ours}-`) || run.workflowId === ours) continue;
        return run.workflowId;
      }
      return undefined;
    },
  });

  return {
    /** Reads the subscription through its source, against the copy accepted last (core/subscription-source.ts). */
    readSubscription: (input: SubscriptionReadInput): Promise<SubscriptionRead> =>
      sourceOf(input.subscription).read(readContext(), input),

    /** An image list's read as runs begun before readSubscription record it (image-lists/subscription-source.ts). */
    readSubscribedList: (input: ReadSubscribedListInput) => listReader(readContext())(input),

    /** A registry project's read as runs begun before readSubscription record it (oci/subscription-source.ts). */
    readSubscribedRegistry: (input: ProjectReadInput) => readSubscribedProject(readContext(), input),

    /** The images of this list that our account holds in the cloud (never another tenant's). */
    cloudInventory: (req: InventoryRequest): Promise<CloudInventory> => cloud.inventory(req),

    /**
     * Delivers each event to its image revision's workflow (signal-with-start, the bridge's own
     * path), so the hook path and the subscription never register an image twice. Delivering
     * again after a crash is harmless: the running workflow takes the same event once more.
     */
    async deliverImageEvents({
      events,
      options,
    }: {
      events: ImageEvent[];
      options: RegistrationOptions;
    }): Promise<string[]> {
      const client = await temporal();
      const site = registrationSite(config);
      let done = 0;
      const stop = keepHeartbeating(() => ({ step: 'delivering image events', done, total: events.length }));
      try {
        const ids: string[] = [];
        for (const event of events) {
          const started = await startWorkflowForEvent(client, config, event, options, site);
          ids.push(started.childWorkflowId ?? '');
          done++;
        }
        return ids;
      } finally {
        stop();
      }
    },
  };
}

export type SubscriptionActivities = ReturnType<typeof createSubscriptionActivities>;
