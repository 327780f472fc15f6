import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { classified } from '../activities/failures.js';
import { createImagePipelineActivities } from '../activities/image-pipeline.js';
import { createSynnefoActivities } from '../activities/synnefo.js';
import { createWorkerOwnActivities } from './own-activities.js';

type ActivityMap = Record<string, (...args: never[]) => Promise<unknown>>;

function classifyAll<T extends ActivityMap>(activities: T): T {
  return Object.fromEntries(Object.entries(activities).map(([name, fn]) => [name, classified(fn)])) as T;
}

/**
 * The activities of one worker, split by where they run: `shared` on the shared task queue (any
 * worker), `host` on this worker's own queue (they read or write the image's files here).
 */
export function buildActivities(config: Config, logger: Logger) {
  const pipeline = createImagePipelineActivities({ config, logger: logger.child({ component: 'pipeline' }) });
  const synnefo = createSynnefoActivities({ config, logger: logger.child({ component: 'synnefo' }) });
  const own = createWorkerOwnActivities({ config, logger: logger.child({ component: 'worker' }) });
  return {
    shared: classifyAll({
      claimHost: own.claimHost,
      logEvent: own.logEvent,
      throwOnPurpose: own.throwOnPurpose,
      findRegisteredImage: synnefo.findRegisteredImage,
      expireRegisteredImages: synnefo.expireRegisteredImages,
    }),
    host: classifyAll({
      acquireImage: pipeline.acquireImage,
      inspectImage: pipeline.inspectImage,
      convertToRaw: pipeline.convertToRaw,
      cleanupWorkspace: pipeline.cleanupWorkspace,
      prepareImage: synnefo.prepareImage,
      registerWithKamaki: synnefo.registerWithKamaki,
    }),
  };
}
