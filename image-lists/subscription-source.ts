/**
 * Image lists as a subscription source: the list is read the way every command reads one (fetch,
 * S/MIME signature, endorsers, parse), checked against the copy accepted last (its version, its
 * date, its list id) and against the subscription's `images` and `vo`.
 */
import { ApplicationFailure } from '@temporalio/common';
import { subscriptionKey, type Subscription } from '../core/config.js';
import { compareVersions } from '../core/event.js';
import { SignatureError } from '../core/errors.js';
import type { SourceReadContext, SubscriptionSource } from '../core/subscription-source.js';
import {
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_SYNC_RUN_TIMEOUT_MS,
  LIST_REJECTED,
  type AcceptedList,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';
import { whileHeartbeating } from '../runtime/heartbeats.js';
import { checkImageList } from './health.js';
import { listRead, type ReadSubscribedListInput, type ReadSubscribedListResult } from './list-read.js';
import { listIdClaimedElsewhere, listIdMismatch } from './list-ids.js';
import { imageToEvent, parseListDate } from './parse.js';
import { readImageList } from './read.js';
import { applySignaturePolicy, verifySignerCertificate, type SignatureOutcome } from './signature.js';
import { authorisedEndorsers, endorserNotAuthorised, type AuthorisedEndorsers } from './subscription.js';

function rejected(url: string, why: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`image list ${url} refused: ${why}`, LIST_REJECTED);
}

/** The subscription's settings that shape what is taken of the list: a change makes the next run read it again. */
function selectionOf(subscription: Pick<SubscriptionSpec, 'images' | 'vo'>): string {
  return JSON.stringify({ images: subscription.images ?? null, vo: subscription.vo ?? null });
}

/**
 * The read of a subscribed list as the `readSubscribedList` activity returns it (the shape its
 * histories record): fetched conditionally and verified. A list the site must not trust
 * (signature, endorser, its own expiry, a date in the future, a version older than the one
 * accepted last) fails with ImageListRejected: the run fails visibly and the cloud is untouched.
 */
export function listReader(ctx: SourceReadContext) {
  const { config } = ctx;
  const log = ctx.logger;
  const { signal } = ctx;
  /**
   * A list the server says has not changed is the copy accepted last: it is trusted again only
   * if it has not expired since, and its signer is still authorised for this subscription,
   * still chains to the CAs of security.caPath and is not revoked by their CRLs.
   */
  const checkStoredCopy = async (
    subscription: SubscriptionSpec,
    previous: NonNullable<ReadSubscribedListInput['previous']>,
    authorised: AuthorisedEndorsers,
  ): Promise<void> => {
    const url = subscription.url;
    const expires = previous.expires ? parseListDate(previous.expires) : undefined;
    if (expires && expires.getTime() <= Date.now())
      throw rejected(url, `the list (not modified since) expired on ${previous.expires} (dc:date:expires)`);
    if (!previous.signerPem) return;
    const { security } = config;
    const checked = await verifySignerCertificate(previous.signerPem, {
      caPath: security.caPath,
      crlCheck: security.crlCheck,
      timeoutMs: security.readTimeoutMs,
    });
    const outcome: SignatureOutcome = checked.ok
      ? {
          state: 'verified',
          signer: checked.signer,
          authorisationProblem: endorserNotAuthorised(checked.signer, authorised, url),
        }
      : { state: 'invalid', reason: checked.reason };
    try {
      const status = applySignaturePolicy(outcome, security);
      if (status.warning) log.warn({ url }, `${status.warning} (the list was not modified)`);
    } catch (err) {
      if (err instanceof SignatureError)
        throw rejected(url, `${err.message} (checked again: the list was not modified)`);
      throw err;
    }
  };

  /**
   * A subscription speaks for one list id, fixed by the site: the configured `listId`, else the
   * one it accepted first (the schedule carries it); and an id is one subscription's only — not
   * another's configured `listId`, not a registry project's, not one another subscription of
   * this deployment has synced.
   */
  const checkListIdentity = async (
    subscription: SubscriptionSpec,
    listId: string,
    previous: Pick<AcceptedList, 'listId'> | undefined,
  ): Promise<void> => {
    const url = subscription.url;
    const pinned = subscription.listId
      ? { listId: subscription.listId, by: 'subscriptions[].listId' }
      : previous && { listId: previous.listId, by: 'the id it was first accepted with, pinned' };
    const problem = listIdMismatch(listId, pinned) ?? listIdClaimedElsewhere(config, url, listId);
    if (problem) throw rejected(url, problem);
    if (subscription.listId === listId) return; // the configuration says so; no other subscription's listId may
    const other = await ctx.syncedElsewhere(subscription, listId);
    if (other) throw rejected(url, `list id ${listId} belongs to another subscription (synced by ${other})`);
  };

  /**
   * Fetches (conditionally) and verifies the subscribed list. A list the site must not trust
   * (signature, endorser, its own expiry, a date in the future, a version older than the one
   * accepted last) fails with ImageListRejected: the run fails visibly and the cloud is untouched.
   */
  return async ({ subscription, previous }: ReadSubscribedListInput): Promise<ReadSubscribedListResult> => {
    const url = subscription.url;
    const endorsers =
      subscription.endorsers.length > 0
        ? { endorsers: subscription.endorsers, key: `the subscription of ${url}` }
        : undefined;
    const selection = selectionOf(subscription);
    // A 304 is taken only for a copy that can be checked again (its signer kept) and was read
    // with the settings of now; else the list is read whole and checked as a new one.
    const conditional = previous?.signerPem !== undefined && previous.selection === selection;
    let read;
    try {
      read = await whileHeartbeating({ step: `read the image list ${url}` }, () =>
        readImageList({
          url,
          config,
          logger: log,
          tokens: subscription.credential ? { credential: subscription.credential } : {},
          endorsers,
          ifChanged: conditional ? { etag: previous.etag, lastModified: previous.lastModified } : {},
          // The run timed out or was cancelled: a read that hangs stops with it.
          signal,
        }),
      );
    } catch (err) {
      if (err instanceof SignatureError) throw rejected(url, err.message);
      throw err;
    }
    if (!read) {
      if (!previous) return { notModified: true };
      await whileHeartbeating({ step: `check the accepted copy of ${url} again` }, async () => {
        await checkStoredCopy(subscription, previous, endorsers ?? authorisedEndorsers(config, url));
        await checkListIdentity(subscription, previous.listId, previous);
      });
      return { notModified: true };
    }
    const { list, invalid } = read;
    if (list.expired) throw rejected(url, `the list expired on ${list.expires} (dc:date:expires)`);
    if (list.createdInFuture) throw rejected(url, `the list is dated in the future (dc:date:created ${list.created})`);
    await whileHeartbeating({ step: `check the list id of ${url}` }, () =>
      checkListIdentity(subscription, list.identifier, previous),
    );
    if (previous && previous.listId === list.identifier) {
      if (previous.version && list.version) {
        if (compareVersions(list.version, previous.version) < 0)
          throw rejected(
            url,
            `version ${list.version} is older than ${previous.version}, the version accepted last (hv:version)`,
          );
      } else if (previous.created && list.created && Date.parse(list.created) < Date.parse(previous.created)) {
        // Without two versions to compare, the list's own date orders it: a replayed older copy is refused.
        throw rejected(
          url,
          `the list is dated ${list.created}, before ${previous.created}, the list accepted last (dc:date:created; no hv:version to compare)`,
        );
      }
    }
    const vo = subscription.vo ?? list.vo;
    const selected = subscription.images
      ? list.images.filter((i) => subscription.images!.includes(i.identifier))
      : list.images;
    const result: ReadSubscribedListResult = {
      notModified: false,
      list: { identifier: list.identifier, title: list.title, version: list.version, vo },
      images: selected.map((image) => ({
        event: imageToEvent({ identifier: list.identifier, vo }, image),
        expired: image.expired,
      })),
      invalid: invalid.map((i) => ({ identifier: i.identifier, problem: i.problem })),
      selection,
      etag: read.etag,
      lastModified: read.lastModified,
    };
    if (list.created) result.list.created = list.created;
    if (list.expires) result.list.expires = list.expires;
    if (read.signerPem) result.signerPem = read.signerPem;
    return result;
  };
}

export const imageListSource: SubscriptionSource<Subscription> = {
  name: undefined,
  entries: (config) => config.subscriptions,

  spec(sub, origin) {
    const spec: SubscriptionSpec = {
      url: subscriptionKey(sub.url),
      endorsers: [...(sub.endorser ? [sub.endorser] : []), ...(sub.endorsers ?? [])],
      everyMs: sub.every ?? DEFAULT_SYNC_INTERVAL_MS,
      runTimeoutMs: sub.runTimeout ?? DEFAULT_SYNC_RUN_TIMEOUT_MS,
      origin,
    };
    if (sub.credential) spec.credential = sub.credential;
    if (sub.vo) spec.vo = sub.vo;
    if (sub.cloud) spec.cloud = sub.cloud;
    if (sub.clouds) spec.clouds = [...sub.clouds];
    if (sub.images) spec.images = [...sub.images];
    if (sub.listId) spec.listId = sub.listId;
    if (sub.maxExpireFraction !== undefined) spec.maxExpireFraction = sub.maxExpireFraction;
    return spec;
  },

  // The read needs the copy's metadata only (validators, signer, version, list id).
  readsPreviousImages: false,

  describe: (spec) => ({
    summary: `Sync of the image list ${spec.url}`,
    reads: `Reads and verifies the list at ${spec.url} (host ${new URL(spec.url).host}), then registers its new images and revisions and expires what it no longer names.`,
    pinsListId: true,
  }),

  read: (ctx, input) => listRead(listReader(ctx), input),
  check: checkImageList,
};
