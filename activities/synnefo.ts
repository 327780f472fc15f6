import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { classified } from './failures.js';
import { prepareImage } from './prepare.js';
import { findRegisteredImage, registerWithKamaki } from './register.js';
import { expireRegisteredImages } from './expire.js';
import type { ExpireInput, FindImageInput, PrepareInput, RegisterInput } from './synnefo-types.js';

export type { PrepareInput, PreparedImage, RegisterInput, RegisteredImage, ExpireInput, ExpireResult, FindImageInput } from './synnefo-types.js';

export interface SynnefoDeps {
  config: Config;
  logger: Logger;
}

/** The Synnefo steps: snf-mkimage preparation, kamaki registration, expiry. Errors are classified once (failures.ts). */
export function createSynnefoActivities(deps: SynnefoDeps) {
  const { config, logger } = deps;
  return {
    findRegisteredImage: classified((input: FindImageInput) => findRegisteredImage(config, logger, input)),
    prepareImage: classified((input: PrepareInput) => prepareImage(config, logger, input)),
    registerWithKamaki: classified((input: RegisterInput) => registerWithKamaki(config, logger, input)),
    expireRegisteredImages: classified((input: ExpireInput) => expireRegisteredImages(config, logger, input)),
  };
}
