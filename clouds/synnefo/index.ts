import type { ActivityDeps } from '../../runtime/deps.js';
import type { CloudTarget } from '../target.js';
import { expireRegisteredImages } from './expire.js';
import { synnefoInventory } from './inventory.js';
import { prepareImage } from './prepare.js';
import { findRegisteredImage, registerWithKamaki } from './register.js';

/** Synnefo: snf-mkimage prepares the image, kamaki uploads it to Pithos and registers it with Plankton. */
export function synnefoTarget(deps: ActivityDeps): CloudTarget {
  return {
    kind: 'synnefo',
    // snf-mkimage and Plankton's diskdump take raw disks only.
    diskFormats: ['raw'],
    findImage: (req) => findRegisteredImage(deps, req),
    prepare: (input) => prepareImage(deps, input),
    publish: (input) => registerWithKamaki(deps, input),
    expire: (req) => expireRegisteredImages(deps, req),
    inventory: (req) => synnefoInventory(deps, req),
  };
}
