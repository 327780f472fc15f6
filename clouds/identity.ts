/**
 * How a registered image is found again on any cloud: the identity properties it carries, and
 * the stable names derived from them. Pure: no I/O.
 */
import type { ImageEvent } from '../core/event.js';
import { IDENTITY_PROPERTIES, imageIdentity } from '../core/workflow-contract.js';

/** The property filter that finds the images registered for this image (any revision when `anyRevision`). */
export function identityFilter(event: ImageEvent, anyRevision = false): Record<string, string> {
  const identity = imageIdentity(event);
  const filter: Record<string, string> = {
    [IDENTITY_PROPERTIES.imageListId]: identity.imageListId,
    [IDENTITY_PROPERTIES.imageId]: identity.imageId,
  };
  if (!anyRevision) filter[IDENTITY_PROPERTIES.revision] = identity.revision;
  return filter;
}

/**
 * The object name for this image revision: stable, so a retried upload overwrites the same
 * object (and Plankton keeps one image per object) instead of adding another.
 */
export function imageObjectName(event: ImageEvent): string {
  const { imageListId, imageId, revision } = imageIdentity(event);
  return `vmcatcher-${imageListId}-${imageId}-${revision}`.replace(/[^A-Za-z0-9._-]+/g, '_');
}

/** The image's display name: the list's title (or the image id), with its version. */
export function imageDisplayName(event: ImageEvent): string {
  const base = event.title ?? event.imageId ?? imageObjectName(event);
  return event.version && !base.includes(event.version) ? `${base} ${event.version}` : base;
}
