import type { Config } from '../../core/config.js';
import type { RegistrationSite } from '../../core/workflow-contract.js';
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

/** `synnefo-<kamaki cloud>`: the configured default, or the kamaki cloud an event or subscription names. */
export function synnefoSite(synnefo: Pick<Config['synnefo'], 'cloud'>): RegistrationSite {
  return { type: 'synnefo', name: synnefo.cloud, eventsChoose: true };
}
