import type { BaseContext } from 'clipanion';

export interface CliContext extends BaseContext {
  env: NodeJS.ProcessEnv;
}
