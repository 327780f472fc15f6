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
  /** The images accepted last: a tag moved back to an older digest is refused (oci/). */
  previous?: ListedImage[];
  /** The digests the selected tags named at the last read: an unchanged manifest costs one conditional request. */
  manifests?: RememberedManifests;
}

/**
 * A registry subscription's read for its sync run: the project read by `readProject` (given the
 * images accepted last), made the run's accepted copy, with the images whose read failed kept.
 */
export async function projectRead(
  readProject: (input: ProjectReadInput) => Promise<ReadRegistryProject>,
  { subscription, previous }: SubscriptionReadInput,
): Promise<SubscriptionRead> {
  const project = await readProject({ subscription, previous: previous?.images, manifests: previous?.manifests });
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
  return {
    notModified: false,
    // The registry's login also pulls the layers: the acquire step resolves it by name.
    options: subscriptionOptions(subscription, true),
    accepted,
    invalid: project.invalid,
    unread,
    keep: unread.map((u) => u.imageId),
    ...(project.requests ? { requests: project.requests } : {}),
  };
}
