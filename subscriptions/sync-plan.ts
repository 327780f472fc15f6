/**
 * What one sync of a subscribed image list must do, decided from three readings: the list as it
 * is now, the copy the subscription last accepted, and what the cloud holds for the list (images
 * carrying our identity properties, owned by our account). The cloud is the truth about what is
 * registered; the list is the truth about what should be. Pure and deterministic: the
 * syncImageList workflow runs it, so it imports nothing with I/O.
 */
import type { ImageEvent } from '../core/event.js';
import type { CloudImage, CloudInventory } from '../clouds/target.js';
import { ApplicationFailure } from '@temporalio/common';
import {
  imageIdentity,
  MASS_EXPIRY_REFUSED,
  type AcceptedList,
  type ListedImage,
  type SyncedImage,
} from '../core/workflow-contract.js';
import { decodeDigests, idDigest, revisionDigest } from './carried-copy.js';

type RegisterReason = 'new' | 'updated' | 'missing-from-cloud';
type ExpireReason = 'removed' | 'expired' | 'old-revision';

interface PlannedRegistration {
  reason: RegisterReason;
  event: ImageEvent;
}

interface PlannedExpiry {
  reason: ExpireReason;
  event: ImageEvent;
}

interface SyncPlan {
  register: PlannedRegistration[];
  expire: PlannedExpiry[];
  /** Image ids already registered at their current revision: they cost nothing. */
  unchanged: string[];
  /** Old revisions that should be made private but carry no sha512 (or sha256) to name them by. */
  unresolved: { imageId: string; revision: string; cloudImageId: string }[];
  /** Images whose old revision stays until the new one is registered (a later run expires it). */
  replacing: string[];
}

function revisionOf(event: ImageEvent): string {
  return imageIdentity(event).revision;
}

function idOf(event: ImageEvent): string {
  return imageIdentity(event).imageId;
}

/** The event that expires one revision of an image (vmcatcher's ExpirePostfix, with the revision's checksum when known). */
function expiryEvent(
  listId: string,
  base: Pick<ImageEvent, 'imageId' | 'vo' | 'title' | 'version'>,
  checksumSha512?: string,
  checksumSha256?: string,
): ImageEvent {
  const event: ImageEvent = {
    origin: 'image-list',
    type: 'ExpirePostfix',
    imageListId: listId,
    imageId: base.imageId,
    extra: {},
  };
  if (base.vo) event.vo = base.vo;
  if (base.title) event.title = base.title;
  if (base.version) event.version = base.version;
  if (checksumSha512) event.checksumSha512 = checksumSha512;
  else if (checksumSha256) event.checksumSha256 = checksumSha256;
  return event;
}

interface SyncPlanInput {
  listId: string;
  vo?: string;
  current: ListedImage[];
  previous?: AcceptedList;
  cloud: CloudImage[];
  expireAction: CloudInventory['expireAction'];
  /**
   * Image ids whose read failed this run (a registry repository or tag that could not be read, a
   * list entry that is not valid but names its identifier): whatever the cloud holds of them stays.
   */
  keep?: string[];
  /** The read is not complete (an invalid entry names no identifier): nothing is expired as `removed`. */
  incomplete?: boolean;
}

export function planSync(input: SyncPlanInput): SyncPlan {
  const { listId, current, previous, cloud } = input;
  const live = (image: CloudImage) => image.isPublic || input.expireAction === 'unregister';
  const wanted = new Map<string, ImageEvent>();
  const expiredInList = new Map<string, ImageEvent>();
  for (const image of current) (image.expired ? expiredInList : wanted).set(idOf(image.event), image.event);
  const before = new Map((previous?.images ?? []).map((i) => [idOf(i.event), i.event]));
  // A large list's copy carries digests instead of its images, and the registrations its run
  // delivered (when few): those are what may still be on their way.
  for (const event of previous?.pending ?? []) if (!before.has(idOf(event))) before.set(idOf(event), event);
  const digests = previous?.digests !== undefined ? decodeDigests(previous.digests) : undefined;
  const inCloud = new Set(cloud.map((c) => `${c.imageId}\u0000${c.revision}`));
  // A read problem never becomes an expiry: only a successful, complete read says an image is gone.
  const kept = new Set(input.keep ?? []);
  const noRemovals = input.incomplete === true;

  const plan: SyncPlan = { register: [], expire: [], unchanged: [], unresolved: [], replacing: [] };
  for (const [id, event] of wanted) {
    const revision = revisionOf(event);
    if (inCloud.has(`${id}\u0000${revision}`)) {
      plan.unchanged.push(id);
      continue;
    }
    const earlier = before.get(id);
    const reason: RegisterReason = earlier
      ? revisionOf(earlier) === revision
        ? 'missing-from-cloud'
        : 'updated'
      : digests?.ids.has(idDigest(id))
        ? digests.named.has(revisionDigest(id, revision))
          ? 'missing-from-cloud'
          : 'updated'
        : 'new';
    plan.register.push({ reason, event });
  }

  const expired = new Set<string>();
  const expire = (key: string, entry: PlannedExpiry) => {
    if (expired.has(key)) return;
    expired.add(key);
    plan.expire.push(entry);
  };
  for (const image of cloud) {
    const now = wanted.get(image.imageId);
    if (now && image.revision === revisionOf(now)) continue;
    if (!live(image)) continue;
    if (kept.has(image.imageId)) continue;
    const key = `${image.imageId}\u0000${image.revision}`;
    // Name the expired revision by what is known of it: the list's entry, the last accepted copy's, or the id alone.
    const known = [expiredInList.get(image.imageId), before.get(image.imageId)].find(
      (e) => e && revisionOf(e) === image.revision,
    );
    // Else by what the cloud's image says of itself (the title and version its registration stored).
    const base = known ?? { imageId: image.imageId, vo: input.vo, title: image.title, version: image.version };
    if (!now) {
      const reason: ExpireReason = expiredInList.has(image.imageId) ? 'expired' : 'removed';
      if (reason === 'removed' && noRemovals) continue;
      expire(key, { reason, event: expiryEvent(listId, base, image.checksumSha512, image.checksumSha256) });
    } else if (!inCloud.has(`${image.imageId}\u0000${revisionOf(now)}`)) {
      // Replaced, but its successor is not in the cloud yet: it stays offered until it is, and a
      // later run (the first that finds the successor registered) expires it. A changed image is
      // one event per run, and users never go without a revision of it.
      plan.replacing.push(image.imageId);
    } else if (!image.checksumSha512 && !image.checksumSha256) {
      plan.unresolved.push({ imageId: image.imageId, revision: image.revision, cloudImageId: image.cloudImageId });
    } else {
      expire(key, {
        reason: 'old-revision',
        event: expiryEvent(listId, base, image.checksumSha512, image.checksumSha256),
      });
    }
  }
  // A revision the last accepted copy named that is not (yet) in the cloud may still be on its
  // way: its registration is cancelled by the expiry (the last event of a revision wins).
  for (const [id, event] of before) {
    const now = wanted.get(id);
    if (now && revisionOf(now) === revisionOf(event)) continue;
    const key = `${id}\u0000${revisionOf(event)}`;
    if (inCloud.has(key)) continue; // the cloud's side decided above
    if (kept.has(event.imageId ?? '')) continue;
    const reason: ExpireReason = expiredInList.has(id) ? 'expired' : now ? 'old-revision' : 'removed';
    if (reason === 'removed' && noRemovals) continue;
    expire(key, { reason, event: expiryEvent(listId, event, event.checksumSha512, event.checksumSha256) });
  }
  return plan;
}

/**
 * How many of the images this list has registered (live in the cloud) the plan takes away
 * (`removed` or `expired`: a new revision replacing an old one takes nothing away), for the
 * mass-expiry guard.
 */
export function plannedLoss(
  plan: Pick<SyncPlan, 'expire'>,
  cloud: CloudImage[],
  expireAction: CloudInventory['expireAction'],
): { leaving: number; registered: number; removed: number; expired: number } {
  const live = new Set(cloud.filter((c) => c.isPublic || expireAction === 'unregister').map((c) => c.imageId));
  const gone = new Map<string, ExpireReason>();
  for (const { reason, event } of plan.expire) {
    if (reason !== 'old-revision' && event.imageId !== undefined && live.has(event.imageId))
      gone.set(event.imageId, reason);
  }
  const reasons = [...gone.values()];
  return {
    leaving: gone.size,
    registered: live.size,
    removed: reasons.filter((r) => r === 'removed').length,
    expired: reasons.filter((r) => r === 'expired').length,
  };
}

/** An image a run acted on, as its summary names it. */
export function syncedImage(event: ImageEvent, reason: string, workflowId?: string): SyncedImage {
  const entry: SyncedImage = { imageId: event.imageId ?? '', reason };
  if (event.title) entry.title = event.title;
  if (event.version) entry.version = event.version;
  if (workflowId) entry.workflowId = workflowId;
  return entry;
}

/** The mass-expiry guard's refusal: the run stops before delivering anything, and says how to let it through. */
export function massExpiryRefusal(
  url: string,
  listId: string,
  loss: ReturnType<typeof plannedLoss>,
  maxFraction: number,
  cloud?: string,
): ApplicationFailure {
  const why = [loss.removed && `${loss.removed} removed from the list`, loss.expired && `${loss.expired} expired`]
    .filter(Boolean)
    .join(', ');
  return ApplicationFailure.create({
    type: MASS_EXPIRY_REFUSED,
    nonRetryable: true,
    message:
      `the sync of ${url} would expire ${loss.leaving} of the ${loss.registered} images registered from ${listId}${cloud ? ` in cloud ${cloud}` : ''} (${why}), ` +
      `more than maxExpireFraction ${maxFraction}: stopped, nothing delivered. If that is right, run ` +
      `\`sync-now --url ${url} --allow-mass-expiry\` (or raise subscriptions[].maxExpireFraction)`,
    details: [loss],
  });
}
