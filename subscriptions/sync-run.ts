/**
 * One sync run of a subscription, as the `syncSubscription` activity runs it on the worker: read
 * the subscription through its source, see what the cloud holds of it, plan, check the plan against
 * the mass-expiry guard, deliver, and say what was done. Everything the size of the list (the read
 * images, the cloud's inventory, the events) stays here, never in the workflow's history: the
 * workflow gets the summary (at most MAX_NAMED images named per category, the rest counted) and
 * the bounded copy carried to the next run (carried-copy.ts). The steps that touch the outside
 * (read, inventory, deliver) are given, so workflows-mocked.test.ts runs this with its mocks.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { CloudInventory, InventoryRequest } from '../clouds/target.js';
import type { ImageEvent } from '../core/event.js';
import {
  invalidEntriesKept,
  LIST_REJECTED,
  type AcceptedList,
  type RegistrationOptions,
  type SubscriptionRead,
  type SubscriptionReadInput,
  type SubscriptionSpec,
  type SyncSummary,
} from '../core/workflow-contract.js';
import { carriedCopy, cloudMatches, decodeDigests, MAX_NAMED } from './carried-copy.js';
import { massExpiryRefusal, plannedLoss, planSync, syncedImage } from './sync-plan.js';

/** What a run does outside: the source's read, the cloud's inventory, the deliveries. */
export interface SyncSteps {
  read(input: SubscriptionReadInput): Promise<SubscriptionRead>;
  inventory(req: InventoryRequest): Promise<CloudInventory>;
  /** Delivers the events to their image revisions' workflows; each one's workflow id, in order. */
  deliver(events: ImageEvent[], options: RegistrationOptions): Promise<string[]>;
  /** Whether the source reads against the images it accepted last (a registry's tags): they are carried whatever their number. */
  readsPreviousImages: boolean;
  warn(message: string, details: Record<string, unknown>): void;
}

export interface MassExpiryGuard {
  maxFraction: number;
  /** The id of a usable `sync-now --allow-mass-expiry` allowance. */
  allowance?: string;
}

export interface SyncRunInput {
  subscription: SubscriptionSpec;
  /** The copy the last successful run carried (the schedule's last completion result). */
  previous?: AcceptedList;
  guard: MassExpiryGuard;
}

export interface SyncRunResult {
  summary: SyncSummary;
  /** The copy for the next run. */
  accepted: AcceptedList;
}

/** The summary as the workflow's result and current details carry it: MAX_NAMED of each category, `counts` when more. */
export function boundedSummary(summary: SyncSummary): SyncSummary {
  const counts = {
    registered: summary.registered.length,
    expired: summary.expired.length,
    invalid: summary.counts?.invalid ?? summary.invalid.length,
    unread: summary.unread?.length ?? 0,
    unresolved: summary.unresolved.length,
  };
  if (Object.values(counts).every((n) => n <= MAX_NAMED) && !summary.counts) return summary;
  const bounded: SyncSummary = {
    ...summary,
    registered: summary.registered.slice(0, MAX_NAMED),
    expired: summary.expired.slice(0, MAX_NAMED),
    invalid: summary.invalid.slice(0, MAX_NAMED),
    unresolved: summary.unresolved.slice(0, MAX_NAMED),
    counts,
  };
  if (summary.unread) bounded.unread = summary.unread.slice(0, MAX_NAMED);
  return bounded;
}

/** The copy read again (after a 304 the cloud did not match) is the one accepted: same validators, or same version and date. */
function sameCopy(read: AcceptedList, previous: AcceptedList): boolean {
  if (read.etag !== undefined || previous.etag !== undefined) return read.etag === previous.etag;
  if (read.lastModified !== undefined || previous.lastModified !== undefined)
    return read.lastModified === previous.lastModified;
  return read.version === previous.version && read.created === previous.created;
}

export async function runSync(
  steps: SyncSteps,
  { subscription, previous, guard }: SyncRunInput,
): Promise<SyncRunResult> {
  const url = subscription.url;
  const first = await steps.read({ subscription, previous });
  const unconditional304 = () =>
    ApplicationFailure.nonRetryable(`${url} answered 304 Not Modified to an unconditional request`, LIST_REJECTED);
  let read: Extract<SubscriptionRead, { notModified: false }>;
  let fetched: SyncSummary['fetched'];
  let inventory: CloudInventory | undefined;
  if (first.notModified) {
    if (!previous) throw unconditional304();
    fetched = 'not-modified';
    // The copy's invalid entries are still what the list says: their images stay kept.
    const invalid = previous.invalid ?? [];
    if (previous.digests === undefined) {
      // The copy carries the images themselves: it is the list.
      read = {
        notModified: false,
        options: first.options,
        accepted: previous,
        invalid,
        ...invalidEntriesKept(invalid),
      };
    } else {
      inventory = await steps.inventory({ listId: previous.listId, options: first.options });
      const digests = decodeDigests(previous.digests);
      if (cloudMatches(digests, inventory.images, inventory.expireAction, previous.incomplete === true)) {
        const summary: SyncSummary = {
          url,
          listId: previous.listId,
          version: previous.version,
          fetched,
          registered: [],
          expired: [],
          unchanged: digests.wanted.size,
          invalid,
          unresolved: [],
        };
        const { unread } = invalidEntriesKept(invalid);
        if (unread.length) summary.unread = unread;
        if (previous.invalidCount !== undefined)
          summary.counts = {
            registered: 0,
            expired: 0,
            invalid: previous.invalidCount,
            unread: unread.length,
            unresolved: 0,
          };
        return { summary: boundedSummary(summary), accepted: previous };
      }
      // The cloud is not what the list wants (an image deleted by hand, one still registering):
      // the list is read again, whole, to plan from its images.
      const again = await steps.read({
        subscription,
        previous: { ...previous, etag: undefined, lastModified: undefined },
      });
      if (again.notModified) throw unconditional304();
      read = again;
      if (!sameCopy(again.accepted, previous)) fetched = 'changed';
      if (again.accepted.listId !== previous.listId) inventory = undefined;
    }
  } else {
    read = first;
    fetched = 'changed';
  }
  return reconcile(steps, { subscription, previous, guard }, read, fetched, inventory);
}

async function reconcile(
  steps: SyncSteps,
  { subscription, previous, guard }: SyncRunInput,
  read: Extract<SubscriptionRead, { notModified: false }>,
  fetched: SyncSummary['fetched'],
  known: CloudInventory | undefined,
): Promise<SyncRunResult> {
  const { accepted, options } = read;
  const { images: cloud, expireAction } = known ?? (await steps.inventory({ listId: accepted.listId, options }));
  const plan = planSync({
    listId: accepted.listId,
    vo: subscription.vo,
    current: accepted.images,
    previous: previous?.listId === accepted.listId ? previous : undefined,
    cloud,
    expireAction,
    keep: read.keep,
    incomplete: read.incomplete,
  });

  const loss = plannedLoss(plan, cloud, expireAction);
  let massExpiryAllowed: string | undefined;
  if (loss.leaving > guard.maxFraction * loss.registered) {
    if (!guard.allowance) {
      throw massExpiryRefusal(subscription.url, accepted.listId, loss, guard.maxFraction);
    }
    massExpiryAllowed = guard.allowance;
    steps.warn('mass expiry allowed by sync-now --allow-mass-expiry', { ...loss, allowance: guard.allowance });
  }

  const events = [...plan.register.map((r) => r.event), ...plan.expire.map((e) => e.event)];
  const ids = events.length > 0 ? await steps.deliver(events, options) : [];
  const registered = plan.register.map((r, i) => syncedImage(r.event, r.reason, ids[i]));
  const expired = plan.expire.map((e, i) => syncedImage(e.event, e.reason, ids[plan.register.length + i]));
  if (plan.unresolved.length > 0)
    steps.warn('old public revisions carry no sha512 and were left as they are', {
      unresolved: plan.unresolved.slice(0, MAX_NAMED),
      count: plan.unresolved.length,
    });

  const summary: SyncSummary = {
    url: subscription.url,
    listId: accepted.listId,
    version: accepted.version,
    fetched,
    registered,
    expired,
    unchanged: plan.unchanged.length,
    invalid: read.invalid,
    unresolved: plan.unresolved,
  };
  if (read.unread.length) summary.unread = read.unread;
  if (massExpiryAllowed) summary.massExpiryAllowed = massExpiryAllowed;
  if (read.requests) summary.requests = read.requests;
  if (accepted.invalidCount !== undefined)
    summary.counts = {
      registered: registered.length,
      expired: expired.length,
      invalid: accepted.invalidCount,
      unread: read.unread.length,
      unresolved: plan.unresolved.length,
    };
  const copy = carriedCopy(accepted, {
    keep: read.keep,
    incomplete: read.incomplete,
    keepImages: steps.readsPreviousImages,
    pending: plan.register.map((r) => r.event),
  });
  return { summary: boundedSummary(summary), accepted: copy };
}
