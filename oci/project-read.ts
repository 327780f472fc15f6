/**
 * A registry subscription's read as its sync run takes it, from the read of the project (the
 * `readSubscribedRegistry` activity's result). Pure: the workflow of runs begun before every source
 * had one read step (workflows/sync-image-list.ts) turns that activity's result into the same.
 */
import {
  subscriptionOptions,
  type AcceptedList,
  type ListedImage,
  type SubscriptionRead,
  type SubscriptionReadInput,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';
import type { ReadRegistryProject, RememberedManifests } from './source.js';

/** What the `readSubscribedRegistry` activity is given. */
export interface ProjectReadInput {
  subscription: SubscriptionSpec;
  /** The images accepted last, when the copy carries them: a tag moved back to an older digest is refused (oci/). */
  previous?: ListedImage[];
  /** The digests the selected tags named at the last read (a copy made before `memory`): an unchanged manifest costs one conditional request. */
  manifests?: RememberedManifests;
  /** The same and what a read needs of the images accepted last, as a copy carries them (AcceptedList.registry). */
  memory?: AcceptedList['registry'];
  /** The project's validator at the last read, for a copy that does not carry its images: a read that finds the same says not modified. */
  validator?: string;
}

/**
 * A registry subscription's read for its sync run: the project read by `readProject` (given the
 * images accepted last, or what the copy remembers of them), made the run's accepted copy, with
 * the images whose read failed kept. A copy that carries digests instead of its images carries
 * the project's validator too (as `etag`): a read that finds the same is not modified, as a list
 * answered 304 is, and the run checks the cloud against the digests. The run that reads again
 * after that check (the validator cleared, as a list's ETag is) gets the images.
 */
export async function projectRead(
  readProject: (input: ProjectReadInput) => Promise<ReadRegistryProject>,
  { subscription, previous }: SubscriptionReadInput,
): Promise<SubscriptionRead> {
  const input: ProjectReadInput = { subscription, previous: previous?.images, manifests: previous?.manifests };
  if (previous?.registry) input.memory = previous.registry;
  if (previous?.digests !== undefined && previous.etag !== undefined) input.validator = previous.etag;
  const project = await readProject(input);
  // The registry's login also pulls the layers: the acquire step resolves it by name.
  const options = subscriptionOptions(subscription, true);
  if (project.notModified)
    return { notModified: true, options, ...(project.requests ? { requests: project.requests } : {}) };
  const unread = project.unread ?? [];
  // An image whose read failed this run stays in the accepted copy as it was accepted last, so
  // the next run still compares against it (a tag moved back to an older digest is refused).
  const unreadIds = new Set(unread.map((u) => u.imageId));
  const read = new Set(project.images.map((i) => i.event.imageId));
  const kept = (previous?.images ?? []).filter(
    (i) => unreadIds.has(i.event.imageId ?? '') && !read.has(i.event.imageId),
  );
  const accepted: AcceptedList = { listId: project.listId, images: [...project.images, ...kept] };
  // What the next read needs, bounded (oci/remembered.ts); a read from before that carried the tags' digests as they are.
  if (project.memory) accepted.registry = project.memory;
  else if (project.manifests) accepted.manifests = project.manifests;
  if (project.validator) accepted.etag = project.validator;
  return {
    notModified: false,
    options,
    accepted,
    invalid: project.invalid,
    unread,
    keep: unread.map((u) => u.imageId),
    ...(project.requests ? { requests: project.requests } : {}),
  };
}
