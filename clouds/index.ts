import type { Config } from '../core/config.js';
import type { RegistrationSite } from '../core/workflow-contract.js';
import type { ActivityDeps } from '../runtime/deps.js';
import { glanceChecks } from './glance/health.js';
import { glanceSite, glanceTarget } from './glance/index.js';
import { synnefoChecks } from './synnefo/health.js';
import { synnefoSite, synnefoTarget } from './synnefo/index.js';
import type { CloudTarget, TargetChecks } from './target.js';

/**
 * The cloud this worker registers images on, from `cloud.type`: Synnefo (the `synnefo` block) or a
 * Glance cloud. A new target is a folder beside clouds/synnefo/ and clouds/glance/ implementing
 * CloudTarget, chosen here (its target, its site and its health checks) and nowhere else.
 */
export function cloudTarget(deps: ActivityDeps): CloudTarget {
  const cloud = deps.config.cloud;
  if (cloud.type === 'glance')
    return glanceTarget({ ...deps, logger: deps.logger.child({ cloud: `glance-${cloud.name}` }) }, cloud);
  return synnefoTarget({ ...deps, logger: deps.logger.child({ cloud: 'synnefo' }) });
}

/** The site's cloud as registration identities name it (registrationTarget, `<type>-<name>`). */
export function registrationSite(config: Pick<Config, 'cloud' | 'synnefo'>): RegistrationSite {
  const cloud = config.cloud;
  if (cloud.type === 'glance') return glanceSite(cloud);
  return synnefoSite(config.synnefo);
}

/** What `doctor` checks of the configured cloud. */
export function cloudChecks(config: Pick<Config, 'cloud'>): TargetChecks {
  const cloud = config.cloud;
  if (cloud.type === 'glance') return glanceChecks(cloud);
  return synnefoChecks;
}

/** Every kind of cloud a worker can register on: what `registrations --cloud NAME` may mean. */
export const CLOUD_TYPES: readonly string[] = ['synnefo', 'glance'];
