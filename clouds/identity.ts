/**
 * What every cloud target shares: how a registered image is found again (the identity properties
 * it carries, and the stable names derived from them) and how its OS family is spelled. Pure: no I/O.
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

/** The image's display name: the list's title (or the image id), with its version, on one line. */
export function imageDisplayName(event: ImageEvent): string {
  const base = printable(event.title ?? '') || printable(event.imageId ?? '') || imageObjectName(event);
  const version = printable(event.version ?? '');
  return version && !base.includes(version) ? `${base} ${version}` : base;
}

// eslint-disable-next-line no-control-regex -- exactly what this removes
const CONTROL_CHARACTERS = / *[\u0000-\u001f\u007f-\u009f\u2028\u2029]+ */g;

/**
 * A value as it may reach kamaki or Glance: every run of control characters (C0, DEL, C1, the
 * Unicode line and paragraph separators), with the spaces around it, becomes one space, and the
 * ends are trimmed. Names and property
 * values come from publishers: a newline must never reach a tool's argument or a header.
 */
export function printable(value: string): string {
  return value.replace(CONTROL_CHARACTERS, ' ').trim();
}

/**
 * `Linux`, ` LINUX ` → `linux`; anything naming Windows → `windows`; other families (freebsd,
 * netbsd, openbsd…) lower-cased as they are. Empty → undefined.
 */
export function normaliseOsFamily(value: string | undefined): string | undefined {
  const v = value?.trim().toLowerCase();
  if (!v) return undefined;
  if (v.includes('windows')) return 'windows';
  if (v.includes('linux')) return 'linux';
  return v.replace(/\s+/g, '_');
}
