/**
 * The steps of a subscription's sync run (workflows/sync-image-list.ts): read the list the way
 * every command reads one (or the registry project), see what the cloud holds for it, and deliver the events the plan
 * decided to the image revisions' workflows, exactly as the bridge does.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import { compareVersions, type ImageEvent } from '../core/event.js';
import { InvalidInputError, SignatureError } from '../core/errors.js';
import { startWorkflowForEvent } from '../core/starter.js';
import {
  LIST_REJECTED,
  SA_IMAGE_LIST_ID,
  SYNC_WORKFLOW,
  type AcceptedList,
  type ListedImage,
  type RegistrationOptions,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';
import { imageToEvent, parseListDate } from '../image-lists/parse.js';
import { readRegistryProject, type ReadRegistryProject } from '../oci/source.js';
import { readImageList } from '../image-lists/read.js';
import { listIdClaimedElsewhere, listIdMismatch } from '../image-lists/list-ids.js';
import { syncWorkflowIdPrefix } from '../subscriptions/schedules.js';
import { applySignaturePolicy, verifySignerCertificate, type SignatureOutcome } from '../image-lists/signature.js';
import { authorisedEndorsers, endorserNotAuthorised, type AuthorisedEndorsers } from '../image-lists/subscription.js';
import type { CloudInventory, CloudTarget, InventoryRequest } from '../clouds/target.js';
import { registrationSite } from '../clouds/index.js';
import type { ActivityDeps } from '../runtime/deps.js';
import { cancellationSignal } from '../runtime/context.js';
import { keepHeartbeating, whileHeartbeating } from '../runtime/heartbeats.js';

export interface SubscriptionDeps extends ActivityDeps {
  /** The worker's Temporal client, connected on first use. */
  temporal: () => Promise<Client>;
  cloud: CloudTarget;
}

export interface ReadSubscribedListInput {
  subscription: SubscriptionSpec;
  previous?: Pick<
    AcceptedList,
    'listId' | 'version' | 'created' | 'expires' | 'signerPem' | 'selection' | 'etag' | 'lastModified'
  >;
}

export type ReadSubscribedListResult =
  | { notModified: true }
  | {
      notModified: false;
      list: {
        identifier: string;
        title?: string;
        version?: string;
        vo?: string;
        created?: string;
        expires?: string;
      };
      images: ListedImage[];
      invalid: Array<{ identifier?: string; problem: string }>;
      /** The verified signer's certificate, kept with the accepted copy for the next 304. */
      signerPem?: string;
      /** The subscription's `images` and `vo` this read applied. */
      selection: string;
      etag?: string;
      lastModified?: string;
    };

function rejected(url: string, why: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`image list ${url} refused: ${why}`, LIST_REJECTED);
}

/** The subscription's settings that shape what is taken of the list: a change makes the next run read it again. */
export function selectionOf(subscription: Pick<SubscriptionSpec, 'images' | 'vo'>): string {
  return JSON.stringify({ images: subscription.images ?? null, vo: subscription.vo ?? null });
}

/** A literal for a Temporal visibility query. */
function queryLiteral(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function createSubscriptionActivities({ config, logger, temporal, cloud }: SubscriptionDeps) {
  const log = logger.child({ component: 'subscriptions' });
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
      throw rejected(url, `list id ${listId} belongs to another subscription (synced by ${run.workflowId})`);
    }
  };

  return {
    /**
     * Fetches (conditionally) and verifies the subscribed list. A list the site must not trust
     * (signature, endorser, its own expiry, a date in the future, a version older than the one
     * accepted last) fails with ImageListRejected: the run fails visibly and the cloud is untouched.
     */
    async readSubscribedList({ subscription, previous }: ReadSubscribedListInput): Promise<ReadSubscribedListResult> {
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
      if (list.createdInFuture)
        throw rejected(url, `the list is dated in the future (dc:date:created ${list.created})`);
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
    },

    /**
     * Reads what a subscribed registry project offers now: its repositories, their selected tags
     * and the manifests those name, each (repository, manifest) the event a list image would be.
     * The login is resolved here, on the worker, from the credential's name. A refused login or a
     * project that cannot be listed fails the run (permanently when retrying cannot help); a tag
     * whose manifest cannot be registered is reported in `invalid`.
     */
    async readSubscribedRegistry({
      subscription,
      previous,
    }: {
      subscription: SubscriptionSpec;
      /** The images accepted last: a tag moved back to an older digest is refused (oci/). */
      previous?: ListedImage[];
    }): Promise<ReadRegistryProject> {
      const project = subscription.registry;
      if (subscription.source !== 'registry' || !project)
        throw new InvalidInputError(`subscription ${subscription.url} is not a registry project`);
      const source = { ...project, credential: subscription.credential, vo: subscription.vo };
      return whileHeartbeating({ step: `read the registry project ${subscription.url}` }, () =>
        readRegistryProject({ source, config, logger: log, previous, signal: cancellationSignal() }),
      );
    },

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
