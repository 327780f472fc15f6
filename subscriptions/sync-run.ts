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
  type SyncedImage,
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
  /**
   * The clouds the subscription's images go to, each with the options its events carry (naming it):
   * one, unnamed, on a site of one cloud (the default when not given). `vo` is the list's VO: a
   * cloud whose `vos` leave it out is not among them.
   */
  clouds?(options: RegistrationOptions, vo: string | undefined): SyncCloud[];
  /** Whether the source reads against the images it accepted last (a registry's tags): they are carried whatever their number. */
  readsPreviousImages: boolean;
  warn(message: string, details: Record<string, unknown>): void;
}

/** One cloud a sync plans for: its name in `clouds` (none on a site of one cloud) and the options of its events. */
export interface SyncCloud {
  name?: string;
  options: RegistrationOptions;
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
  let inventories = new Map<string, CloudInventory>();
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
      const digests = decodeDigests(previous.digests);
      const matching = await everyCloudMatches(
        steps,
        cloudsOf(steps, first.options, subscription.vo ?? previous.vo),
        previous,
        (inventory) => cloudMatches(digests, inventory.images, inventory.expireAction, previous.incomplete === true),
      );
      inventories = matching.inventories;
      if (matching.all) {
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
      if (again.accepted.listId !== previous.listId) inventories = new Map();
    }
  } else {
    read = first;
    fetched = 'changed';
  }
  return reconcile(steps, { subscription, previous, guard }, read, fetched, inventories);
}

function cloudsOf(steps: SyncSteps, options: RegistrationOptions, vo: string | undefined): SyncCloud[] {
  return steps.clouds?.(options, vo) ?? [{ options }];
}

/** A cloud's key in the maps of one run: its name, or '' for the one cloud of a site that has one. */
const keyOf = (cloud: SyncCloud) => cloud.name ?? '';

/**
 * Whether every cloud holds what the copy says (a run answered 304 has nothing else to do). The
 * inventories taken are kept for the plan; a cloud that cannot be asked does not match.
 */
async function everyCloudMatches(
  steps: SyncSteps,
  clouds: SyncCloud[],
  previous: AcceptedList,
  matches: (inventory: CloudInventory) => boolean,
): Promise<{ all: boolean; inventories: Map<string, CloudInventory> }> {
  const inventories = new Map<string, CloudInventory>();
  let all = true;
  for (const cloud of clouds) {
    try {
      const inventory = await steps.inventory({ listId: previous.listId, options: cloud.options });
      inventories.set(keyOf(cloud), inventory);
      if (!matches(inventory)) all = false;
    } catch (err) {
      if (clouds.length === 1) throw err;
      all = false;
    }
  }
  return { all, inventories };
}

/** What a run plans for one cloud, or why it could not. */
interface CloudPlan {
  cloud: SyncCloud;
  plan?: ReturnType<typeof planSync>;
  inventory?: CloudInventory;
  failed?: string;
}

async function reconcile(
  steps: SyncSteps,
  { subscription, previous, guard }: SyncRunInput,
  read: Extract<SubscriptionRead, { notModified: false }>,
  fetched: SyncSummary['fetched'],
  known: Map<string, CloudInventory>,
): Promise<SyncRunResult> {
  const { accepted, options } = read;
  const vo = subscription.vo ?? accepted.vo ?? accepted.images.find((i) => i.event.vo)?.event.vo;
  const clouds = cloudsOf(steps, options, vo);
  // Each cloud is planned on its own: one that cannot be asked (down, refusing our login) is
  // named in the summary and caught up by a later run, while the others get their images.
  const plans: CloudPlan[] = [];
  for (const cloud of clouds) {
    try {
      const inventory =
        known.get(keyOf(cloud)) ?? (await steps.inventory({ listId: accepted.listId, options: cloud.options }));
      const plan = planSync({
        listId: accepted.listId,
        vo: subscription.vo,
        current: accepted.images,
        previous: previous?.listId === accepted.listId ? previous : undefined,
        cloud: inventory.images,
        expireAction: inventory.expireAction,
        keep: read.keep,
        incomplete: read.incomplete,
      });
      plans.push({ cloud, plan, inventory });
    } catch (err) {
      if (clouds.length === 1) throw err;
      const failed = err instanceof Error ? err.message : String(err);
      steps.warn('could not see what a cloud holds; its images wait for the next run', { cloud: cloud.name, failed });
      plans.push({ cloud, failed });
    }
  }
  if (plans.length > 0 && plans.every((p) => p.failed !== undefined)) {
    throw new Error(
      `no cloud could be asked what it holds: ${plans.map((p) => `${p.cloud.name}: ${p.failed}`).join('; ')}`,
    );
  }

  // The mass-expiry guard, cloud by cloud, before anything is delivered anywhere.
  let massExpiryAllowed: string | undefined;
  for (const { plan, inventory, cloud } of plans) {
    if (!plan || !inventory) continue;
    const loss = plannedLoss(plan, inventory.images, inventory.expireAction);
    if (loss.leaving > guard.maxFraction * loss.registered) {
      if (!guard.allowance) {
        throw massExpiryRefusal(subscription.url, accepted.listId, loss, guard.maxFraction, cloud.name);
      }
      massExpiryAllowed = guard.allowance;
      steps.warn('mass expiry allowed by sync-now --allow-mass-expiry', {
        ...loss,
        cloud: cloud.name,
        allowance: guard.allowance,
      });
    }
  }

  const registered: SyncedImage[] = [];
  const expired: SyncedImage[] = [];
  const unresolved: SyncSummary['unresolved'] = [];
  const perCloud: NonNullable<SyncSummary['clouds']> = {};
  let unchanged = 0;
  for (const { plan, cloud, failed } of plans) {
    if (!plan) {
      perCloud[keyOf(cloud)] = { registered: 0, expired: 0, unchanged: 0, failed };
      continue;
    }
    const events = [...plan.register.map((r) => r.event), ...plan.expire.map((e) => e.event)];
    const ids = events.length > 0 ? await steps.deliver(events, cloud.options) : [];
    const named = (image: SyncedImage) => (cloud.name === undefined ? image : { ...image, cloud: cloud.name });
    registered.push(...plan.register.map((r, i) => named(syncedImage(r.event, r.reason, ids[i]))));
    expired.push(...plan.expire.map((e, i) => named(syncedImage(e.event, e.reason, ids[plan.register.length + i]))));
    unresolved.push(...plan.unresolved);
    unchanged += plan.unchanged.length;
    perCloud[keyOf(cloud)] = {
      registered: plan.register.length,
      expired: plan.expire.length,
      unchanged: plan.unchanged.length,
    };
  }
  if (unresolved.length > 0)
    steps.warn('old public revisions carry no sha512 and were left as they are', {
      unresolved: unresolved.slice(0, MAX_NAMED),
      count: unresolved.length,
    });

  const summary: SyncSummary = {
    url: subscription.url,
    listId: accepted.listId,
    version: accepted.version,
    fetched,
    registered,
    expired,
    unchanged,
    invalid: read.invalid,
    unresolved,
  };
  if (plans.some((p) => p.cloud.name !== undefined)) summary.clouds = perCloud;
  if (read.unread.length) summary.unread = read.unread;
  if (massExpiryAllowed) summary.massExpiryAllowed = massExpiryAllowed;
  if (read.requests) summary.requests = read.requests;
  if (accepted.invalidCount !== undefined)
    summary.counts = {
      registered: registered.length,
      expired: expired.length,
      invalid: accepted.invalidCount,
      unread: read.unread.length,
      unresolved: unresolved.length,
    };
  // What may still be on its way, in any cloud (one event per image: they name the same revision).
  const pending = new Map<string, ImageEvent>();
  for (const { plan } of plans) for (const r of plan?.register ?? []) pending.set(r.event.imageId ?? '', r.event);
  const copy = carriedCopy(accepted, {
    keep: read.keep,
    incomplete: read.incomplete,
    keepImages: steps.readsPreviousImages,
    pending: [...pending.values()],
  });
  if (vo !== undefined) copy.vo = vo;
  return { summary: boundedSummary(summary), accepted: copy };
}
