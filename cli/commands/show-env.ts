import { Command } from 'clipanion';
import { ENV_OVERRIDES, REDACTED } from '../../core/config.js';
import { TOKEN_ENV } from '../../image-lists/subscription.js';
import { BaseCommand } from '../base-command.js';

const SECRET_ENV = new Set([
  ...ENV_OVERRIDES.filter(({ key }) => /password|apiKey|credentials/i.test(key)).map(({ env }) => env),
  TOKEN_ENV,
]);

export class ShowEnvCommand extends BaseCommand {
  static override paths = [['show-env']];
  static override usage = Command.Usage({
    description: 'Print the process environment as JSON (secrets redacted)',
    details: 'Useful in a vmcatcher hook to see which VMCATCHER_* variables an event carries.',
    examples: [['Show the environment', '$0 show-env']],
  });

  async run(): Promise<number> {
    const env: Record<string, string> = {};
    for (const key of Object.keys(this.context.env).sort()) {
      const value = this.context.env[key];
      if (value !== undefined) env[key] = SECRET_ENV.has(key) ? REDACTED : value;
    }
    this.out(JSON.stringify(env, null, 2));
    return 0;
  }
}
