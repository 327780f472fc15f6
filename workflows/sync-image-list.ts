import {
  ApplicationFailure,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { SubscriptionActivities } from '../activities/subscriptions.js';
import {
  DEFAULT_MAX_EXPIRE_FRACTION,
  LIST_REJECTED,
  MASS_EXPIRY_REFUSED,
  SA_IMAGE_LIST_ID,
  subscriptionOptions,
  syncSummaryMarkdown,
  type AcceptedList,
  type SyncedImage,
  type SubscriptionSpec,
  type SyncImageListInput,
  type SyncImageListResult,
  type SyncSummary,
} from '../core/workflow-contract.js';
import type { ImageEvent } from '../core/event.js';
import { plannedLoss, planSync } from '../subscriptions/sync-plan.js';

/**
 * Every step heartbeats, so a worker that dies mid-sync is noticed in seconds and the step runs
 * again on another (or the restarted) worker; reading a list and starting its workflows are
 * both safe to repeat.
 */
const { readSubscribedList, readSubscribedRegistry, cloudInventory, deliverImageEvents } =
  proxyActivities<SubscriptionActivities>({
    startToCloseTimeout: '30 minutes',
    heartbeatTimeout: '20 seconds',
    retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '2 minutes', maximumAttempts: 10 },
  });

function described(event: ImageEvent, reason: string, workflowId?: string): SyncedImage {
  const entry: SyncedImage = { imageId: event.imageId ?? '', reason };
  if (event.title) entry.title = event.title;
  if (event.version) entry.version = event.version;
  if (workflowId) entry.workflowId = workflowId;
  return entry;
}

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
  if (subscription.source === 'registry') {
    // A registry has no conditional read of a whole project: every run lists it, and asks for each
    // manifest read last time with its digest (a 304 costs no body), then plans as for a list.
    // (Data only, no new command: histories of runs before this replay as they were.)
    const project = await readSubscribedRegistry.executeWithOptions(
      { summary: `read the registry project ${subscription.url}` },
      [{ subscription, previous: previous?.images, manifests: previous?.manifests }],
    );
    const unread = project.unread ?? [];
    // An image whose read failed this run stays in the accepted copy as it was accepted last, so
    // the next run still compares against it (a tag moved back to an older digest is refused).
    const unreadIds = new Set(unread.map((u) => u.imageId));
    const read = new Set(project.images.map((i) => i.event.imageId));
    const kept = (previous?.images ?? []).filter(
      (i) => unreadIds.has(i.event.imageId ?? '') && !read.has(i.event.imageId),
    );
    const accepted: AcceptedList = { listId: project.listId, images: [...project.images, ...kept] };
    if (project.manifests) accepted.manifests = project.manifests;
    const result = await reconcile(subscription, accepted, previous, guard, {
      fetched: 'changed',
      requests: project.requests,
      invalid: project.invalid,
      unread,
      keep: unread.map((u) => u.imageId),
    });
    return withAllowance(result, allowMassExpiry);
  }
  const read = await readSubscribedList.executeWithOptions({ summary: `read the image list ${subscription.url}` }, [
    {
      subscription,
      previous: previous && {
        listId: previous.listId,
        version: previous.version,
        created: previous.created,
        expires: previous.expires,
        signerPem: previous.signerPem,
        selection: previous.selection,
        etag: previous.etag,
        lastModified: previous.lastModified,
      },
    },
  ]);

  let accepted: AcceptedList;
  let invalid: SyncImageListResult['summary']['invalid'] = [];
  if (read.notModified) {
    if (!previous)
      throw ApplicationFailure.nonRetryable(
        `${subscription.url} answered 304 Not Modified to an unconditional request`,
        LIST_REJECTED,
      );
    accepted = previous;
    // The copy's invalid entries are still what the list says: their images stay kept.
    invalid = previous.invalid ?? [];
  } else {
    accepted = {
      listId: read.list.identifier,
      version: read.list.version,
      created: read.list.created,
      expires: read.list.expires,
      signerPem: read.signerPem,
      selection: read.selection,
      etag: read.etag,
      lastModified: read.lastModified,
      images: read.images,
    };
    if (read.invalid.length) accepted.invalid = read.invalid;
    invalid = read.invalid;
  }
  // An entry that failed validation is not a removal: its image stays; one without an identifier
  // could be any image, so nothing is expired as removed this run.
  const named = invalid.filter((i) => i.identifier !== undefined);
  const unread = named.map((i) => ({ imageId: i.identifier!, problem: `invalid entry: ${i.problem}` }));
  const incomplete = named.length < invalid.length;
  if (incomplete)
    unread.push({
      imageId: '(entry without dc:identifier)',
      problem: 'the read is incomplete: nothing expired as removed',
    });
  const result = await reconcile(subscription, accepted, previous, guard, {
    fetched: read.notModified ? 'not-modified' : 'changed',
    invalid,
    unread,
    keep: named.map((i) => i.identifier!),
    incomplete,
  });
  return withAllowance(result, allowMassExpiry);
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
  read: Pick<SyncSummary, 'fetched' | 'invalid' | 'requests'> & {
    unread: NonNullable<SyncSummary['unread']>;
    keep: string[];
    incomplete?: boolean;
  },
): Promise<SyncImageListResult> {
  upsertSearchAttributes([{ key: SA_IMAGE_LIST_ID, value: accepted.listId }]);

  const options = subscriptionOptions(subscription);
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
      const why = [loss.removed && `${loss.removed} removed from the list`, loss.expired && `${loss.expired} expired`]
        .filter(Boolean)
        .join(', ');
      throw ApplicationFailure.create({
        type: MASS_EXPIRY_REFUSED,
        nonRetryable: true,
        message:
          `the sync of ${subscription.url} would expire ${loss.leaving} of the ${loss.registered} images registered from ${accepted.listId} (${why}), ` +
          `more than maxExpireFraction ${guard.maxFraction}: stopped, nothing delivered. If that is right, run ` +
          `\`sync-now --url ${subscription.url} --allow-mass-expiry\` (or raise subscriptions[].maxExpireFraction)`,
        details: [loss],
      });
    }
    massExpiryAllowed = guard.allowance;
    log.warn('mass expiry allowed by sync-now --allow-mass-expiry', { ...loss, allowance: guard.allowance });
  }

  const events = [...plan.register.map((r) => r.event), ...plan.expire.map((e) => e.event)];
  const deliver = `deliver ${events.length} events (${plan.register.length} to register, ${plan.expire.length} to expire)`;
  const ids =
    events.length > 0 ? await deliverImageEvents.executeWithOptions({ summary: deliver }, [{ events, options }]) : [];
  const registered = plan.register.map((r, i) => described(r.event, r.reason, ids[i]));
  const expired = plan.expire.map((e, i) => described(e.event, e.reason, ids[plan.register.length + i]));
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
