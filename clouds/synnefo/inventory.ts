import type { ActivityDeps } from '../../runtime/deps.js';
import { whileHeartbeating } from '../../runtime/heartbeats.js';
import { EVENT_FIELDS, type ImageEvent } from '../../core/event.js';
import { IDENTITY_PROPERTIES, imageIdentity } from '../../core/workflow-contract.js';
import type { CloudInventory, InventoryRequest } from '../target.js';
import { imagesMatching, Kamaki, kamakiCloud } from './kamaki.js';

/** The images of one list that our account registered (`kamaki image list`, ours only), for a subscription's sync. */
export async function synnefoInventory(
  { config, logger }: ActivityDeps,
  { listId, options }: InventoryRequest,
): Promise<CloudInventory> {
  const kamaki = new Kamaki(config, logger, kamakiCloud(config, options));
  const stored = imageIdentity({ imageListId: listId } as ImageEvent).imageListId;
  const { own } = await whileHeartbeating({ step: 'list our images in the cloud' }, () => kamaki.listOwnImages());
  const images = imagesMatching(own, { [IDENTITY_PROPERTIES.imageListId]: stored }).map((img) => ({
    cloudImageId: img.id,
    imageId: img.properties[IDENTITY_PROPERTIES.imageId] ?? '',
    revision: img.properties[IDENTITY_PROPERTIES.revision] ?? '',
    checksumSha512: img.properties[EVENT_FIELDS.checksumSha512]?.toLowerCase(),
    checksumSha256: img.properties[EVENT_FIELDS.checksumSha256]?.toLowerCase(),
    isPublic: img.is_public,
    title: img.properties[EVENT_FIELDS.title],
    version: img.properties[EVENT_FIELDS.version],
  }));
  return { images, expireAction: config.synnefo.expireAction };
}
