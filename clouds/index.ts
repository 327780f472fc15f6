import type { ActivityDeps } from '../activities/types.js';
import { synnefoTarget } from './synnefo/index.js';
import type { CloudTarget } from './target.js';

/**
 * The cloud this worker registers images on. Synnefo is the only one today; a second target is a
 * folder beside clouds/synnefo/ implementing CloudTarget, chosen here from the configuration.
 */
export function cloudTarget(deps: ActivityDeps): CloudTarget {
  return synnefoTarget({ ...deps, logger: deps.logger.child({ cloud: 'synnefo' }) });
}
