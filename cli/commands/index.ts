import { ShowConfCommand } from './show-conf.js';
import { ShowEnvCommand } from './show-env.js';
import { TestQueueCommand } from './test-queue.js';
import { UsageCommand } from './usage.js';

/** Every command, in the original's order where it has one. */
export const commands = [UsageCommand, ShowEnvCommand, ShowConfCommand, TestQueueCommand];
