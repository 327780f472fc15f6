/**
 * The Glance target's steps over the client: find what we registered for an image revision,
 * publish a prepared file (clean up what a crashed attempt left, create, upload, verify, then
 * share), expire, and list what we registered of an image list for a subscription's sync. Only
 * images our project owns are ever found, changed or deleted.
 */
import type { Logger } from 'pino';
import type { GlanceConfig } from '../../core/config.js';
import { EVENT_FIELDS, fromSubscription, type ImageEvent } from '../../core/event.js';
import { IDENTITY_PROPERTIES, imageIdentity } from '../../core/workflow-contract.js';
import type { CloudImage } from '../target.js';
import { identityFilter, imageDisplayName } from '../identity.js';
import type { GlanceClient, GlanceImage, Visibility } from './client.js';
import { customProperties } from './client.js';
import { buildGlanceProperties, GLANCE_TAG, VERIFIED_PROPERTY } from './properties.js';

export type GlanceSettings = Pick<GlanceConfig, 'visibility' | 'voProjects' | 'expireAction' | 'properties'> &
  Partial<Pick<GlanceConfig, 'imageListVos'>>;

export interface GlanceRegistration {
  imageId: string;
  name: string;
  /** The image's URL in Glance. */
  location: string;
  reused: boolean;
  isPublic: boolean;
  visibility: string;
  diskFormat: string;
  properties: Record<string, string>;
}

function registration(image: GlanceImage, reused: boolean, glanceUrl: string): GlanceRegistration {
  return {
    imageId: image.id,
    name: image.name ?? image.id,
    location: `${glanceUrl}/v2/images/${image.id}`,
    reused,
    isPublic: image.visibility === 'public',
    visibility: image.visibility,
    diskFormat: image.disk_format ?? '',
    properties: customProperties(image),
  };
}

/**
 * The VO whose project a `shared` image joins: for an image of a subscription (origin
 * `image-list` or `registry`, started by the site's own sync), the subscription's `vo`, else the
 * signed list's; for any other (a queued event, register-now), the site's `imageListVos` entry for
 * its image list. A queued event's VMCATCHER_EVENT_VO alone never chooses: anyone who may publish
 * to the queue would pick which tenant sees the image.
 */
function sharingVo(event: ImageEvent, settings: GlanceSettings, logger?: Logger): string | undefined {
  if (fromSubscription(event)) return event.vo;
  const mapped = event.imageListId === undefined ? undefined : settings.imageListVos?.[event.imageListId];
  if (event.vo !== undefined && event.vo !== mapped)
    logger?.warn(
      { vo: event.vo, imageListId: event.imageListId ?? null, mapped: mapped ?? null },
      "the event's VO is not the one cloud.imageListVos maps its image list to: ignored for sharing",
    );
  return mapped;
}

/** Glance's own hash of the stored bytes, as the verification mark spells it; undefined before any data. */
function storedHash(image: GlanceImage): string | undefined {
  return image.os_hash_algo && image.os_hash_value ? `${image.os_hash_algo}:${image.os_hash_value}` : undefined;
}

/**
 * Whether an image of ours holds what we verified: our mark equals Glance's hash of the stored
 * bytes. An image from before the mark counts when Glance's sha512 is the event's (the file was
 * uploaded as published). Anything else (a crash between upload and verify) is not reused.
 */
export function isVerifiedImage(image: GlanceImage, publishedSha512: string | undefined): boolean {
  const stored = storedHash(image);
  if (stored === undefined) return false;
  const mark = customProperties(image)[VERIFIED_PROPERTY];
  if (mark !== undefined) return mark === stored;
  return image.os_hash_algo === 'sha512' && publishedSha512 !== undefined && image.os_hash_value === publishedSha512;
}

/**
 * Brings an image's visibility to the site's setting; a `shared` image gets its VO's project
 * (voProjects, the VO from sharingVo) as a member. A VO without a project is logged: the image
 * stays shared with nobody.
 */
async function applyVisibility(
  client: GlanceClient,
  image: GlanceImage,
  settings: GlanceSettings,
  event: ImageEvent,
  logger: Logger,
): Promise<GlanceImage> {
  const wanted: Visibility = settings.visibility;
  let current = image;
  if (current.visibility !== wanted) current = await client.setVisibility(current.id, wanted);
  if (wanted === 'shared') {
    const vo = sharingVo(event, settings, logger);
    const project = vo === undefined ? undefined : settings.voProjects[vo];
    if (project === undefined) {
      logger.warn(
        { imageId: current.id, vo: vo ?? null },
        'shared image: no project is mapped to its VO (cloud.voProjects), so it is shared with nobody yet',
      );
    } else if (
      project !== (await client.projectId()) &&
      !(await client.members(current.id)).some((m) => m.member_id === project)
    ) {
      await client.addMember(current.id, project);
    }
  }
  return current;
}

/** The active (or deactivated, then reactivated) image our project holds for this revision, in line with the site's visibility. */
export async function findGlanceImage(
  client: GlanceClient,
  settings: GlanceSettings,
  event: ImageEvent,
  glanceUrl: string,
  logger: Logger,
): Promise<GlanceRegistration | null> {
  const found = (await client.findOurImages(identityFilter(event))).filter(
    (i) => i.status === 'active' || i.status === 'deactivated',
  );
  const usable = found.filter((i) => isVerifiedImage(i, event.checksumSha512));
  if (usable.length < found.length)
    logger.warn(
      { imageIds: found.filter((i) => !usable.includes(i)).map((i) => i.id) },
      'images of this revision whose stored hash we never verified: not reused (publishing replaces them)',
    );
  if (usable.length === 0) return null;
  // The oldest is the one registered first; later duplicates (none, unless a human made them) stay as they are.
  usable.sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
  let image = usable[0];
  if (image.status === 'deactivated') {
    // The revision was expired and is available again.
    await client.reactivate(image.id);
    logger.info({ imageId: image.id }, 'reactivated the expired image of this revision');
  }
  image = await applyVisibility(client, image, settings, event, logger);
  return registration(image, true, glanceUrl);
}

interface PublishGlanceInput {
  event: ImageEvent;
  file: string;
  diskFormat: 'qcow2' | 'raw';
  osfamily?: string;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  signal?: AbortSignal;
}

/**
 * Registers the file for the event's revision, or returns the image already there. Records a
 * crashed attempt left queued or saving are deleted first; the new record stays private until
 * Glance holds exactly what we sent, and is deleted when it does not.
 */
export async function publishToGlance(
  client: GlanceClient,
  settings: GlanceSettings,
  input: PublishGlanceInput,
  glanceUrl: string,
  logger: Logger,
): Promise<GlanceRegistration> {
  const existing = await findGlanceImage(client, settings, input.event, glanceUrl, logger);
  if (existing) return existing;
  const leftovers = await client.deleteIncomplete(identityFilter(input.event));
  if (leftovers.length > 0)
    logger.info({ imageIds: leftovers }, 'deleted image records an interrupted upload left behind');
  // Data whose hash we never confirmed (a crash between upload and verify): not ours to offer.
  for (const image of await client.findOurImages(identityFilter(input.event))) {
    if (isVerifiedImage(image, input.event.checksumSha512)) continue;
    await client.deleteImage(image.id);
    logger.info({ imageId: image.id, status: image.status }, 'deleted an unverified image of this revision');
  }

  const { properties, truncated } = buildGlanceProperties({
    event: input.event,
    osfamily: input.osfamily,
    siteProperties: settings.properties,
  });
  if (truncated.length > 0) logger.info({ keys: truncated }, "property values cut to Glance's 255 characters");
  const record = await client.createImage({
    name: imageDisplayName(input.event),
    diskFormat: input.diskFormat,
    containerFormat: 'bare',
    visibility: 'private',
    properties,
    tags: [GLANCE_TAG],
  });
  let image: GlanceImage;
  try {
    const sent = await client.uploadFile(record.id, input.file, { onProgress: input.onProgress, signal: input.signal });
    image = await client.verifyUpload(record.id, sent);
    // Glance's hash of what it stored is what we sent: mark it, so this image alone is reused.
    image = await client.updateImage(record.id, { set: { [VERIFIED_PROPERTY]: storedHash(image)! } });
  } catch (err) {
    // A record without (the right) data must not stay; if this fails too, the next attempt's clean-up removes it.
    await client
      .deleteImage(record.id)
      .catch((cleanupErr: unknown) =>
        logger.warn({ imageId: record.id, err: String(cleanupErr) }, 'could not delete the failed image record'),
      );
    throw err;
  }
  image = await applyVisibility(client, image, settings, input.event, logger);
  logger.info({ imageId: image.id, visibility: image.visibility, size: image.size }, 'registered image in Glance');
  return registration(image, false, glanceUrl);
}

interface GlanceExpiry {
  action: GlanceConfig['expireAction'];
  imageIds: string[];
}

/**
 * The event's image was expired: deactivate it and make it private, or delete it, as the site
 * configures. As on Synnefo, an event with a checksum expires exactly that revision (an update's
 * new revision is never hidden); one without expires every revision of the image. Ours only.
 */
export async function expireInGlance(
  client: GlanceClient,
  settings: GlanceSettings,
  event: ImageEvent,
  logger: Logger,
): Promise<GlanceExpiry> {
  const action = settings.expireAction;
  const found = await client.findOurImages(identityFilter(event, !event.checksumSha512 && !event.checksumSha256));
  for (const image of found) {
    if (action === 'delete') {
      await client.deleteImage(image.id);
    } else {
      if (image.status === 'active') await client.deactivate(image.id);
      if (image.visibility !== 'private') await client.setVisibility(image.id, 'private');
    }
    logger.info({ imageId: image.id, action }, 'expired image in Glance');
  }
  return { action, imageIds: found.map((i) => i.id) };
}

/** Statuses of an image that holds its data: what a sync counts as registered. */
const REGISTERED_STATUSES = new Set(['active', 'deactivated']);

/**
 * An image of ours as a subscription's sync sees it, named by the title and version its
 * registration stored (buildGlanceProperties). Live (`isPublic`) until our expiry has deactivated
 * it and made it private.
 */
function inventoryImage(image: GlanceImage): CloudImage {
  const text = (key: string) => (typeof image[key] === 'string' ? (image[key] as string) : undefined);
  const listed: CloudImage = {
    cloudImageId: image.id,
    imageId: text(IDENTITY_PROPERTIES.imageId) ?? '',
    revision: text(IDENTITY_PROPERTIES.revision) ?? '',
    checksumSha512: text(EVENT_FIELDS.checksumSha512.toLowerCase())?.toLowerCase(),
    isPublic: image.status === 'active' || image.visibility !== 'private',
  };
  const title = text(EVENT_FIELDS.title.toLowerCase());
  const version = text(EVENT_FIELDS.version.toLowerCase());
  if (title !== undefined) listed.title = title;
  if (version !== undefined) listed.version = version;
  return listed;
}

/**
 * Every image our project registered for one image list. A record whose upload never finished,
 * or whose stored hash we never verified, is not a registration: the next registration replaces it.
 */
export async function inventoryInGlance(client: GlanceClient, listId: string): Promise<CloudImage[]> {
  const stored = imageIdentity({ imageListId: listId } as ImageEvent).imageListId;
  const ours = await client.findOurImages({ [IDENTITY_PROPERTIES.imageListId]: stored });
  return ours
    .filter((image) => REGISTERED_STATUSES.has(image.status))
    .map((image) => ({ image, listed: inventoryImage(image) }))
    .filter(({ image, listed }) => isVerifiedImage(image, listed.checksumSha512))
    .map(({ listed }) => listed);
}
