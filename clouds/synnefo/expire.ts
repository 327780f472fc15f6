import type { ActivityDeps } from '../../runtime/deps.js';
import type { ExpireImageResult, ImageRequest } from '../../core/workflow-contract.js';
import { identityFilter } from '../identity.js';
import { Kamaki, imagesMatching, kamakiCloud } from './kamaki.js';

/**
 * vmcatcher expired this image: make the revision our account registered private (the default,
 * reversible) or unregister it, as `synnefo.expireAction` says. Finding nothing is success.
 */
export async function expireRegisteredImages(
  { config, logger }: ActivityDeps,
  input: ImageRequest,
): Promise<ExpireImageResult> {
  const action = config.synnefo.expireAction;
  const kamaki = new Kamaki(config, logger, kamakiCloud(config, input.options));
  // vmcatcher's expire event carries the expired revision's sha512: expire exactly that one, so
  // an update (Expire old + Available new, in either order of completion) never hides the new
  // revision. Without a checksum the event names only the image: every revision goes.
  const anyRevision = !input.event.checksumSha512 && !input.event.checksumSha256;
  // Only our account's images: another tenant's image with the same (public) identity
  // properties is none of our business, and we could not change it anyway.
  const found = imagesMatching((await kamaki.listOwnImages()).own, identityFilter(input.event, anyRevision));
  if (found.length === 0) {
    logger.info(
      { imageListId: input.event.imageListId, imageId: input.event.imageId },
      'no registered image to expire',
    );
    return { action, imageIds: [] };
  }
  for (const img of found) {
    if (action === 'unregister') await kamaki.unregister(img.id);
    else if (img.is_public) await kamaki.setVisibility(img.id, false);
    logger.info({ imageId: img.id, action }, 'expired registered image');
  }
  return { action, imageIds: found.map((i) => i.id) };
}
