import {
  ActivityFailure,
  ApplicationFailure,
  defineSignal,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { SubscriptionActivities } from '../activities/subscriptions.js';
import {
  DEFAULT_MAX_EXPIRE_FRACTION,
  LIST_REJECTED,
  MASS_EXPIRY_REFUSED,
  SA_IMAGE_LIST_ID,
  SYNC_PROGRESS_SIGNAL,
  invalidEntriesKept,
  syncSummaryMarkdown,
  type RegistrationOptions,
  type SubscriptionRead,
  type SubscriptionReadInput,
  type AcceptedList,
  type SubscriptionSpec,
  type SyncImageListInput,
  type SyncImageListResult,
  type SyncProgress,
  type SyncSummary,
} from '../core/workflow-contract.js';
import { listRead } from '../image-lists/list-read.js';
import { projectRead } from '../oci/project-read.js';
import { massExpiryRefusal, plannedLoss, planSync, syncedImage } from '../subscriptions/sync-plan.js';

/**
 * Every step heartbeats, so a worker that dies mid-sync is noticed in seconds and the step runs
 * again on another (or the restarted) worker; reading a list and starting its workflows are
 * both safe to repeat.
 */
const {
  syncSubscription,
  readSubscription,
  readSubscribedList,
  readSubscribedRegistry,
  cloudInventory,
  deliverImageEvents,
} = proxyActivities<SubscriptionActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '2 minutes', maximumAttempts: 10 },
});

/**
 * The runs that do the whole sync in one step on a worker (syncSubscription), so that nothing the
 * size of the list enters their history; those begun before read, plan and deliver step by step.
 */
const BOUNDED_SYNC = 'bounded-sync';

const syncProgress = defineSignal<[SyncProgress]>(SYNC_PROGRESS_SIGNAL);

/** The runs that read every source with one step (readSubscription); those begun before read with two (legacyRead). */
const ONE_READ_PER_SOURCE = 'one-read-per-source';

/**
 * One run of a subscription (a Temporal Schedule per subscribed list or registry project starts
 * it, and `sync-now` triggers it): read and verify the list (or read the registry project),
 * compare it with what was accepted last and with what the cloud holds, and send each image that
 * needs work to its image revision's workflow. The accepted list travels to the next run as the
 * schedule's last completion result, so an unchanged list costs one conditional request; a
 * refused list fails the run and keeps the previous accepted copy (a failed run does not replace
 * the last completion result).
 */
export async function syncImageList({
  subscription,
  allowMassExpiry,
}: SyncImageListInput): Promise<SyncImageListResult> {
  const last = workflowInfo().lastResult as SyncImageListResult | undefined;
  const previous = last?.accepted;
  // `sync-now --allow-mass-expiry`'s allowance: for a run that starts before it lapses, and once.
  const allowance =
    allowMassExpiry &&
    allowMassExpiry.id !== last?.allowanceSeen &&
    workflowInfo().runStartTime.getTime() <= Date.parse(allowMassExpiry.until)
      ? allowMassExpiry.id
      : undefined;
  const guard: MassExpiryGuard = {
    maxFraction: subscription.maxExpireFraction ?? DEFAULT_MAX_EXPIRE_FRACTION,
    allowance,
  };
  setCurrentDetails(`Reading ${subscription.url}`);
  if (patched(BOUNDED_SYNC)) return withAllowance(await boundedSync(subscription, previous, guard), allowMassExpiry);
  // Whatever the source, one step reads it (subscriptions/sources.ts chooses the source on the worker).
  const read = patched(ONE_READ_PER_SOURCE)
    ? await readSubscription.executeWithOptions({ summary: `read ${subscription.url}` }, [{ subscription, previous }])
    : await legacyRead({ subscription, previous });
  if (read.notModified) {
    if (!previous)
      throw ApplicationFailure.nonRetryable(
        `${subscription.url} answered 304 Not Modified to an unconditional request`,
        LIST_REJECTED,
      );
    // The copy's invalid entries are still what the list says: their images stay kept.
    const invalid = previous.invalid ?? [];
    const result = await reconcile(subscription, previous, previous, guard, read.options, {
      fetched: 'not-modified',
      invalid,
      ...invalidEntriesKept(invalid),
    });
    return withAllowance(result, allowMassExpiry);
  }
  const { accepted, options, invalid, unread, keep, incomplete, requests } = read;
  const result = await reconcile(subscription, accepted, previous, guard, options, {
    fetched: 'changed',
    requests,
    invalid,
    unread,
    keep,
    incomplete,
  });
  return withAllowance(result, allowMassExpiry);
}

/**
 * The whole run in one step on a worker (subscriptions/sync-run.ts): the list, the cloud's
 * inventory and the events stay there; the run records the summary (naming at most 100 images
 * per category) and the copy for the next run (bounded: subscriptions/carried-copy.ts). While it
 * delivers, the step tells the run how far it is (its current details: n of N delivered).
 */
async function boundedSync(
  subscription: SubscriptionSpec,
  previous: AcceptedList | undefined,
  guard: MassExpiryGuard,
): Promise<SyncImageListResult> {
  setHandler(syncProgress, ({ done, total }) =>
    setCurrentDetails(`Delivering the events of ${subscription.url}: ${done} of ${total} delivered`),
  );
  try {
    const { summary, accepted } = await syncSubscription.executeWithOptions({ summary: `sync ${subscription.url}` }, [
      { subscription, previous, guard },
    ]);
    if (summary.listId) upsertSearchAttributes([{ key: SA_IMAGE_LIST_ID, value: summary.listId }]);
    // The Web UI shows it on the run's User Metadata tab (Current Details), without opening the result.
    setCurrentDetails(syncSummaryMarkdown(summary));
    return { summary, accepted };
  } catch (err) {
    // The guard's refusal is the run's own failure, as when the run decided it itself.
    const cause = err instanceof ActivityFailure ? err.cause : undefined;
    if (cause instanceof ApplicationFailure && cause.type === MASS_EXPIRY_REFUSED)
      throw ApplicationFailure.create({
        type: MASS_EXPIRY_REFUSED,
        nonRetryable: true,
        message: cause.message,
        details: cause.details as unknown[] | undefined,
      });
    throw err;
  }
}

/**
 * The read of the runs begun before every source had the one read step: an image list's and a
 * registry project's own activities, their results taken as the sources take them now. Kept so
 * that those runs replay; remove it with the patch once none is open.
 */
function legacyRead(input: SubscriptionReadInput): Promise<SubscriptionRead> {
  const { url, source } = input.subscription;
  // A spec then named no source but the registry; an image list's names none.
  if (source === undefined)
    return listRead(
      (list) => readSubscribedList.executeWithOptions({ summary: `read the image list ${url}` }, [list]),
      input,
    );
  return projectRead(
    (project) => readSubscribedRegistry.executeWithOptions({ summary: `read the registry project ${url}` }, [project]),
    input,
  );
}

interface MassExpiryGuard {
  maxFraction: number;
  /** The id of a usable `sync-now --allow-mass-expiry` allowance. */
  allowance?: string;
}

/** A run that was given an allowance names it, so the next run (if the schedule still carries it) does not use it again. */
function withAllowance(result: SyncImageListResult, given: SyncImageListInput['allowMassExpiry']): SyncImageListResult {
  return given ? { ...result, allowanceSeen: given.id } : result;
}

/** The accepted images against the cloud and the previous copy: what to register and expire, delivered; the run's result. */
async function reconcile(
  subscription: SubscriptionSpec,
  accepted: AcceptedList,
  previous: AcceptedList | undefined,
  guard: MassExpiryGuard,
  options: RegistrationOptions,
  read: Pick<SyncSummary, 'fetched' | 'invalid' | 'requests'> & {
    unread: NonNullable<SyncSummary['unread']>;
    keep: string[];
    incomplete?: boolean;
  },
): Promise<SyncImageListResult> {
  upsertSearchAttributes([{ key: SA_IMAGE_LIST_ID, value: accepted.listId }]);

  const { images: cloud, expireAction } = await cloudInventory.executeWithOptions(
    { summary: `list the cloud's images of ${accepted.listId}` },
    [{ listId: accepted.listId, options }],
  );
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
  if (loss.leaving > guard.maxFraction * loss.registered && patched('mass-expiry-guard')) {
    if (!guard.allowance) {
      throw massExpiryRefusal(subscription.url, accepted.listId, loss, guard.maxFraction);
    }
    massExpiryAllowed = guard.allowance;
    log.warn('mass expiry allowed by sync-now --allow-mass-expiry', { ...loss, allowance: guard.allowance });
  }

  const events = [...plan.register.map((r) => r.event), ...plan.expire.map((e) => e.event)];
  const deliver = `deliver ${events.length} events (${plan.register.length} to register, ${plan.expire.length} to expire)`;
  const ids =
    events.length > 0 ? await deliverImageEvents.executeWithOptions({ summary: deliver }, [{ events, options }]) : [];
  const registered = plan.register.map((r, i) => syncedImage(r.event, r.reason, ids[i]));
  const expired = plan.expire.map((e, i) => syncedImage(e.event, e.reason, ids[plan.register.length + i]));
  if (plan.unresolved.length > 0)
    log.warn('old public revisions carry no sha512 and were left as they are', { unresolved: plan.unresolved });

  const summary: SyncSummary = {
    url: subscription.url,
    listId: accepted.listId,
    version: accepted.version,
    fetched: read.fetched,
    registered,
    expired,
    unchanged: plan.unchanged.length,
    invalid: read.invalid,
    unresolved: plan.unresolved,
  };
  if (read.unread.length) summary.unread = read.unread;
  if (massExpiryAllowed) summary.massExpiryAllowed = massExpiryAllowed;
  if (read.requests) summary.requests = read.requests;
  // The Web UI shows it on the run's User Metadata tab (Current Details), without opening the result.
  setCurrentDetails(syncSummaryMarkdown(summary));
  return { summary, accepted };
}
