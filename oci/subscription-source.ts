/**
 * Registry projects as a subscription source: each repository of the project is an image, each
 * selected tag a version (oci/source.ts reads them). A registry has no conditional read of a whole
 * project: every run lists it and asks for each selected tag's manifest with the digest it named
 * last (If-None-Match); when every one is the same, a project whose copy no longer carries its
 * images is not modified, as a list answered 304 is. Otherwise it plans as for a list.
 */
import { registrySubscriptionKey, type RegistrySubscription } from '../core/config.js';
import { InvalidInputError } from '../core/errors.js';
import type { SourceReadContext, SubscriptionSource } from '../core/subscription-source.js';
import {
  DEFAULT_SYNC_INTERVAL_MS,
  DEFAULT_SYNC_RUN_TIMEOUT_MS,
  scheduleIdOfKey,
  type RegistryProjectSpec,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';
import { whileHeartbeating } from '../runtime/heartbeats.js';
import { checkRegistryProject } from './health.js';
import { projectRead, type ProjectReadInput } from './project-read.js';
import { readRegistryProject, type ReadRegistryProject } from './source.js';

/** The spec's `source` of a registry project. */
const REGISTRY = 'registry';

/** `subscription:registry:<host_project>:<digest>`: a registry project's schedule, never one of a list's. */
export function registryScheduleId(sub: Pick<RegistrySubscription, 'registry' | 'project'>): string {
  return scheduleIdOfKey(REGISTRY, registrySubscriptionKey(sub));
}

/**
 * Reads what a subscribed registry project offers now, as the `readSubscribedRegistry` activity
 * returns it (the shape its histories record): its repositories, their selected tags and the
 * manifests those name, each (repository, manifest) the event a list image would be. The login is
 * resolved here, on the worker, from the credential's name. A refused login or a project that
 * cannot be listed fails the run (permanently when retrying cannot help); a tag whose manifest
 * cannot be registered is reported in `invalid`.
 */
export async function readSubscribedProject(
  ctx: Pick<SourceReadContext, 'config' | 'logger' | 'signal'>,
  { subscription, previous, manifests, memory, validator }: ProjectReadInput,
): Promise<ReadRegistryProject> {
  const project = subscription.registry;
  if (subscription.source !== REGISTRY || !project)
    throw new InvalidInputError(`subscription ${subscription.url} is not a registry project`);
  const source = { ...project, credential: subscription.credential, vo: subscription.vo };
  return whileHeartbeating({ step: `read the registry project ${subscription.url}` }, () =>
    readRegistryProject({
      source,
      config: ctx.config,
      logger: ctx.logger,
      previous,
      manifests,
      memory,
      validator,
      signal: ctx.signal,
    }),
  );
}

export const registrySource: SubscriptionSource<RegistrySubscription> = {
  name: REGISTRY,
  entries: (config) => config.registrySubscriptions,

  /** Where the project is and what to take of it; the login by name only. */
  spec(sub, origin) {
    const registry: RegistryProjectSpec = { registry: new URL(sub.registry).origin, project: sub.project };
    if (sub.tags) registry.tags = sub.tags;
    if (sub.repositories) registry.repositories = [...sub.repositories];
    if (sub.api) registry.api = sub.api;
    const spec: SubscriptionSpec = {
      url: registrySubscriptionKey(sub),
      source: REGISTRY,
      registry,
      endorsers: [],
      everyMs: sub.every ?? DEFAULT_SYNC_INTERVAL_MS,
      runTimeoutMs: sub.runTimeout ?? DEFAULT_SYNC_RUN_TIMEOUT_MS,
      origin,
    };
    if (sub.credential) spec.credential = sub.credential;
    if (sub.vo) spec.vo = sub.vo;
    if (sub.cloud) spec.cloud = sub.cloud;
    if (sub.clouds) spec.clouds = [...sub.clouds];
    if (sub.maxExpireFraction !== undefined) spec.maxExpireFraction = sub.maxExpireFraction;
    return spec;
  },

  // A large project's copy carries digests and what oci/remembered.ts keeps, not its images.
  readsPreviousImages: false,

  describe: (spec) => ({
    summary: `Sync of the registry project ${spec.url}`,
    reads: `Reads the repositories, selected tags and manifests of ${spec.url} (registry ${new URL(spec.url).host}), then registers new digests and expires the images whose tag left the selection.`,
    label: REGISTRY,
    pinsListId: false,
  }),

  read: (ctx, input) => projectRead((i) => readSubscribedProject(ctx, i), input),
  check: checkRegistryProject,
};
