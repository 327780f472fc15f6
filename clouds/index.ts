import type { ActivityDeps } from '../runtime/deps.js';
import { glanceTarget } from './glance/index.js';
import { synnefoTarget } from './synnefo/index.js';
import type { CloudTarget } from './target.js';

/**
 * The cloud this worker registers images on, from `cloud.type`: Synnefo (the `synnefo` block) or a
 * Glance cloud. A new target is a folder beside clouds/synnefo/ and clouds/glance/ implementing
 * CloudTarget, chosen here.
 */
export function cloudTarget(deps: ActivityDeps): CloudTarget {
  const cloud = deps.config.cloud;
  if (cloud.type === 'glance')
    return glanceTarget({ ...deps, logger: deps.logger.child({ cloud: `glance-${cloud.name}` }) }, cloud);
  return synnefoTarget({ ...deps, logger: deps.logger.child({ cloud: 'synnefo' }) });
}
