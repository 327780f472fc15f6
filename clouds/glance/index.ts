import { whileHeartbeating } from '../../runtime/heartbeats.js';
import { cancellationSignal } from '../../runtime/context.js';
import type { ActivityDeps } from '../../runtime/deps.js';
import type { GlanceConfig } from '../../core/config.js';
import { ImageIntegrityError } from '../../core/errors.js';
import {
  chosenCloud,
  type ExpireImageResult,
  type RegistrationOptions,
  type RegistrationSite,
} from '../../core/workflow-contract.js';
import type { CloudInventory, CloudTarget, DiskFormat, RegisteredImage } from '../target.js';
import type { GlanceClient } from './client.js';
import {
  expireInGlance,
  findGlanceImage,
  inventoryInGlance,
  publishToGlance,
  type GlanceRegistration,
} from './registration.js';
import { glanceClientFromConfig } from './session.js';

function registered(image: GlanceRegistration): RegisteredImage {
  const { imageId, name, location, reused, isPublic, properties } = image;
  return { imageId, name, location, reused, isPublic, properties };
}

/** The sync plan's words for what an expiry does: deactivating keeps the image (hidden), deleting removes it. */
function syncExpireAction(action: GlanceConfig['expireAction']): ExpireImageResult['action'] {
  return action === 'delete' ? 'unregister' : 'make-private';
}

/** `glance-<name>`: a Glance worker registers into its configured cloud only, whatever an event names. */
export function glanceSite(glance: Pick<GlanceConfig, 'name'>): RegistrationSite {
  return { type: 'glance', name: glance.name };
}

/**
 * OpenStack Glance (docs/glance.md): nothing to prepare, the converted (or kept qcow2) file is
 * streamed to the Images API v2 under our project. One Keystone session per target, made on first
 * use: the named credential is resolved on the worker, never carried by a workflow.
 */
export function glanceTarget(deps: ActivityDeps, glance: GlanceConfig): CloudTarget {
  const { config, logger } = deps;
  let client: Promise<GlanceClient> | undefined;
  const connect = (options: RegistrationOptions): Promise<GlanceClient> => {
    const named = chosenCloud(options);
    if (named !== undefined) {
      logger.warn(
        { namedCloud: named, cloud: glance.name },
        'the event names another cloud; this worker registers into its Glance cloud',
      );
    }
    client ??= glanceClientFromConfig(config, glance).catch((err: unknown) => {
      client = undefined;
      throw err;
    });
    return client;
  };

  return {
    kind: 'glance',
    diskFormats: glance.diskFormats,

    async findImage({ event, options }) {
      const c = await connect(options);
      const found = await findGlanceImage(c, glance, event, await c.endpoint(), logger);
      return found ? registered(found) : null;
    },

    async prepare(input) {
      // Glance stores the disk as it is: no snf-mkimage, no metadata to find.
      return { path: input.rawPath, metadata: {}, prepared: false };
    },

    async publish({ path: file, event, options, format }) {
      const c = await connect(options);
      const diskFormat = uploadFormat(format, glance.diskFormats);
      let progress = { bytesDone: 0, bytesTotal: 0 };
      const found = await whileHeartbeating(
        () => ({ step: `Glance upload (${diskFormat})`, ...progress }),
        async () =>
          publishToGlance(
            c,
            glance,
            {
              event,
              file,
              diskFormat,
              osfamily: options.osfamily,
              signal: cancellationSignal(),
              onProgress: (bytesDone, bytesTotal) => (progress = { bytesDone, bytesTotal }),
            },
            await c.endpoint(),
            logger,
          ),
      );
      return registered(found);
    },

    async expire({ event, options }) {
      const c = await connect(options);
      const { action, imageIds } = await expireInGlance(c, glance, event, logger);
      return { action: syncExpireAction(action), imageIds };
    },

    async inventory({ listId, options }): Promise<CloudInventory> {
      const c = await connect(options);
      const images = await whileHeartbeating({ step: 'list our images in Glance' }, () => inventoryInGlance(c, listId));
      return { images, expireAction: syncExpireAction(glance.expireAction) };
    },
  };
}

/**
 * The disk_format of the file to upload, as the pipeline detected or wrote it (Glance does not
 * check it), which must be one the site takes: convertToRaw has made it so.
 */
function uploadFormat(format: string, wanted: readonly DiskFormat[]): DiskFormat {
  const known = wanted.find((f) => f === format);
  if (!known)
    throw new ImageIntegrityError(
      `the file to upload to Glance is ${format}, which this cloud does not take (cloud.diskFormats: ${wanted.join(', ')})`,
    );
  return known;
}
