import { stat } from 'node:fs/promises';
import { whileHeartbeating } from '../../runtime/heartbeats.js';
import type { ActivityDeps } from '../../runtime/deps.js';
import type { ImageEvent } from '../../core/event.js';
import type { ImageRequest } from '../../core/workflow-contract.js';
import { identityFilter, imageDisplayName, imageObjectName } from '../identity.js';
import type { PublishInput, RegisteredImage } from '../target.js';
import { buildImageProperties } from './image-properties.js';
import { Kamaki, imagesMatching, kamakiCloud, type KamakiImage } from './kamaki.js';

function toRegistered(img: KamakiImage, reused: boolean): RegisteredImage {
  return {
    imageId: img.id,
    name: img.name,
    location: img.location ?? '',
    reused,
    isPublic: img.is_public,
    properties: img.properties,
  };
}

/**
 * The image our account registered for this image revision (same identity properties), if any,
 * with its visibility brought in line with `synnefo.public`: the workflow skips the upload
 * when this finds one, so this is where a reused image gets the configured visibility.
 */
export async function findRegisteredImage(deps: ActivityDeps, input: ImageRequest): Promise<RegisteredImage | null> {
  const kamaki = new Kamaki(deps.config, deps.logger, kamakiCloud(deps.config, input.options));
  return reuseExisting(deps, kamaki, input.event);
}

async function reuseExisting(
  { config, logger }: ActivityDeps,
  kamaki: Kamaki,
  event: ImageEvent,
): Promise<RegisteredImage | null> {
  const filter = identityFilter(event);
  const { own, others } = await kamaki.listOwnImages();
  const impostors = imagesMatching(others, filter);
  if (impostors.length) {
    // The identity properties are public and derivable: anyone can put them on an image.
    logger.warn(
      { imageIds: impostors.map((i) => i.id), owners: [...new Set(impostors.map((i) => i.owner))] },
      'images of other accounts carry this identity: ignored',
    );
  }
  const found = imagesMatching(own, filter);
  if (found.length === 0) return null;
  if (found.length > 1)
    logger.warn({ imageIds: found.map((i) => i.id) }, 'several images carry this identity; using the first');
  const img = found[0];
  logger.info({ imageId: img.id }, 'an image with this identity is registered already: reusing it');
  if (img.is_public !== config.synnefo.public) {
    await kamaki.setVisibility(img.id, config.synnefo.public);
    img.is_public = config.synnefo.public;
  }
  return toRegistered(img, true);
}

/**
 * Uploads and registers the image, unless our account has an image with the same identity:
 * then it is reused and only its visibility is brought in line with `synnefo.public`. The
 * object name is derived from the identity, so a retry after a failure between upload and
 * register overwrites the same object and Plankton (one image per object) keeps one image.
 */
export async function registerWithKamaki(deps: ActivityDeps, input: PublishInput): Promise<RegisteredImage> {
  const { config, logger } = deps;
  const kamaki = new Kamaki(config, logger, kamakiCloud(config, input.options));
  const existing = await reuseExisting(deps, kamaki, input.event);
  if (existing) return existing;

  const { properties, dropped, rejected, ignored } = buildImageProperties({
    event: input.event,
    options: input.options,
    metadata: input.metadata,
    defaults: { osfamily: config.synnefo.osfamily, users: config.synnefo.users },
  });
  if (dropped.length) logger.warn({ dropped }, 'Synnefo allows 32 properties per image: left out the least important');
  if (rejected.length) logger.warn({ rejected }, 'left out snf-mkimage metadata keys Synnefo would refuse');
  if (ignored.length)
    logger.warn(
      { ignored },
      "left out the source's properties that only snf-vmcatcher sets (identity, checksums, snf-image's)",
    );

  const objectName = imageObjectName(input.event);
  const container = config.synnefo.container;
  await kamaki.ensureContainer(container);
  // Only for the heartbeat details: a missing file is the tool's error to report.
  const bytesTotal = await stat(input.path).then(
    (st) => st.size,
    () => undefined,
  );
  const started = Date.now();
  await whileHeartbeating(
    () => ({ step: 'kamaki file upload', tool: 'kamaki', bytesTotal, elapsedMs: Date.now() - started }),
    () => kamaki.upload(input.path, container, objectName),
  );
  const img = await kamaki.register({
    name: imageDisplayName(input.event),
    container,
    objectName,
    properties,
    isPublic: config.synnefo.public,
  });
  logger.info({ imageId: img.id, location: img.location, public: img.is_public }, 'image registered');
  return toRegistered(img, false);
}
