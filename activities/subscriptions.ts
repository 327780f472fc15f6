/**
 * The steps of a subscription's sync run (workflows/sync-image-list.ts): read the list the way
 * every command reads one (or the registry project), see what the cloud holds for it, and deliver the events the plan
 * decided to the image revisions' workflows, exactly as the bridge does.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import type { ImageEvent } from '../core/event.js';
import { InvalidInputError, SignatureError } from '../core/errors.js';
import { startWorkflowForEvent } from '../core/starter.js';
import {
  LIST_REJECTED,
  type AcceptedList,
  type ListedImage,
  type RegistrationOptions,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';
import { imageToEvent } from '../image-lists/parse.js';
import { readRegistryProject, type ReadRegistryProject } from '../oci/source.js';
import { readImageList } from '../image-lists/read.js';
import { compareVersions } from '../image-lists/sync-plan.js';
import type { CloudInventory, CloudTarget } from '../clouds/target.js';
import type { ActivityDeps } from './types.js';
import { cancellationSignal } from './context.js';
import { keepHeartbeating, whileHeartbeating } from './heartbeats.js';

export interface SubscriptionDeps extends ActivityDeps {
  /** The worker's Temporal client, connected on first use. */
  temporal: () => Promise<Client>;
  cloud: CloudTarget;
}

export interface ReadSubscribedListInput {
  subscription: SubscriptionSpec;
  previous?: Pick<AcceptedList, 'listId' | 'version' | 'etag' | 'lastModified'>;
}

export type ReadSubscribedListResult =
  | { notModified: true }
  | {
      notModified: false;
      list: { identifier: string; title?: string; version?: string; vo?: string };
      images: ListedImage[];
      invalid: Array<{ identifier?: string; problem: string }>;
      etag?: string;
      lastModified?: string;
    };

function rejected(url: string, why: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`image list ${url} refused: ${why}`, LIST_REJECTED);
}

export function createSubscriptionActivities({ config, logger, temporal, cloud }: SubscriptionDeps) {
  const log = logger.child({ component: 'subscriptions' });
  return {
    /**
     * Fetches (conditionally) and verifies the subscribed list. A list the site must not trust
     * (signature, endorser, its own expiry, a date in the future, a version older than the one
     * accepted last) fails with ImageListRejected: the run fails visibly and the cloud is untouched.
     */
    async readSubscribedList({ subscription, previous }: ReadSubscribedListInput): Promise<ReadSubscribedListResult> {
      const url = subscription.url;
      let read;
      try {
        read = await whileHeartbeating({ step: `read the image list ${url}` }, () =>
          readImageList({
            url,
            config,
            logger: log,
            tokens: subscription.credential ? { credential: subscription.credential } : {},
            endorsers:
              subscription.endorsers.length > 0
                ? { endorsers: subscription.endorsers, key: `the subscription of ${url}` }
                : undefined,
            ifChanged: previous ? { etag: previous.etag, lastModified: previous.lastModified } : {},
          }),
        );
      } catch (err) {
        if (err instanceof SignatureError) throw rejected(url, err.message);
        throw err;
      }
      if (!read) return { notModified: true };
      const { list, invalid } = read;
      if (list.expired) throw rejected(url, `the list expired on ${list.expires} (dc:date:expires)`);
      if (list.createdInFuture)
        throw rejected(url, `the list is dated in the future (dc:date:created ${list.created})`);
      if (
        previous?.version &&
        list.version &&
        previous.listId === list.identifier &&
        compareVersions(list.version, previous.version) < 0
      ) {
        throw rejected(
          url,
          `version ${list.version} is older than ${previous.version}, the version accepted last (hv:version)`,
        );
      }
      const vo = subscription.vo ?? list.vo;
      const selected = subscription.images
        ? list.images.filter((i) => subscription.images!.includes(i.identifier))
        : list.images;
      return {
        notModified: false,
        list: { identifier: list.identifier, title: list.title, version: list.version, vo },
        images: selected.map((image) => ({
          event: imageToEvent({ identifier: list.identifier, vo }, image),
          expired: image.expired,
        })),
        invalid: invalid.map((i) => ({ identifier: i.identifier, problem: i.problem })),
        etag: read.etag,
        lastModified: read.lastModified,
      };
    },

    /**
     * Reads what a subscribed registry project offers now: its repositories, their selected tags
     * and the manifests those name, each (repository, manifest) the event a list image would be.
     * The login is resolved here, on the worker, from the credential's name. A refused login or a
     * project that cannot be listed fails the run (permanently when retrying cannot help); a tag
     * whose manifest cannot be registered is reported in `invalid`.
     */
    async readSubscribedRegistry({ subscription }: { subscription: SubscriptionSpec }): Promise<ReadRegistryProject> {
      const project = subscription.registry;
      if (subscription.source !== 'registry' || !project)
        throw new InvalidInputError(`subscription ${subscription.url} is not a registry project`);
      const source = { ...project, credential: subscription.credential, vo: subscription.vo };
      return whileHeartbeating({ step: `read the registry project ${subscription.url}` }, () =>
        readRegistryProject({ source, config, logger: log, signal: cancellationSignal() }),
      );
    },

    /** The images of this list that our account holds in the cloud (never another tenant's). */
    cloudInventory: ({ listId, options }: { listId: string; options: RegistrationOptions }): Promise<CloudInventory> =>
      cloud.inventory({ imageListId: listId, options }),

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
      let done = 0;
      const stop = keepHeartbeating(() => ({ step: 'delivering image events', done, total: events.length }));
      try {
        const ids: string[] = [];
        for (const event of events) {
          const started = await startWorkflowForEvent(client, config, event, options);
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
