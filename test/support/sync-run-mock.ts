/**
 * A sync run's one step (`syncSubscription`) made of mocked steps: the run's own logic
 * (subscriptions/sync-run.ts) around a mocked read, inventory and delivery, so the workflow tests
 * with mocked activities keep mocking what a run reads, finds and delivers.
 */
import type { CloudInventory, InventoryRequest } from '../../clouds/target.js';
import type { ImageEvent } from '../../core/event.js';
import type { RegistrationOptions, SubscriptionRead, SubscriptionReadInput } from '../../core/workflow-contract.js';
import { sourceOf } from '../../subscriptions/sources.js';
import { runSync, type SyncRunInput } from '../../subscriptions/sync-run.js';

export interface MockedSyncSteps {
  readSubscription(input: SubscriptionReadInput): Promise<SubscriptionRead>;
  cloudInventory(req: InventoryRequest): Promise<CloudInventory>;
  deliverImageEvents(input: { events: ImageEvent[]; options: RegistrationOptions }): Promise<string[]>;
}

export function mockedSyncSubscription(steps: MockedSyncSteps) {
  return (input: SyncRunInput) =>
    runSync(
      {
        read: (i) => steps.readSubscription(i),
        inventory: (req) => steps.cloudInventory(req),
        deliver: (events, options) => steps.deliverImageEvents({ events, options }),
        readsPreviousImages: sourceOf(input.subscription).readsPreviousImages,
        warn: () => undefined,
      },
      input,
    );
}
