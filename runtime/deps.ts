import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';

/**
 * The one calling convention of activity implementations and of the cloud targets' steps:
 * `(deps: ActivityDeps, input)`.
 */
export interface ActivityDeps {
  config: Config;
  logger: Logger;
}
