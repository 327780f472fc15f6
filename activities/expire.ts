import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { identityFilter } from '../core/image-properties.js';
import { Kamaki, imagesMatching, kamakiCloud } from './kamaki.js';
import type { ExpireInput, ExpireResult } from './synnefo-types.js';

/**
 * vmcatcher expired this image: make every registered revision of it private (the default,
 * reversible) or unregister it, as `synnefo.expireAction` says. Finding nothing is success.
 */
export async function expireRegisteredImages(config: Config, logger: Logger, input: ExpireInput): Promise<ExpireResult> {
  const action = config.synnefo.expireAction;
  const kamaki = new Kamaki(config, logger, kamakiCloud(config, input.options));
  // Any revision: an expire event names the image, not necessarily the checksum we registered.
  const found = imagesMatching(await kamaki.listImages(), identityFilter(input.event, true));
  if (found.length === 0) {
    logger.info({ imageListId: input.event.imageListId, imageId: input.event.imageId }, 'no registered image to expire');
    return { action, imageIds: [] };
  }
  for (const img of found) {
    if (action === 'unregister') await kamaki.unregister(img.id);
    else if (img.is_public) await kamaki.setVisibility(img.id, false);
    logger.info({ imageId: img.id, action }, 'expired registered image');
  }
  return { action, imageIds: found.map((i) => i.id) };
}
