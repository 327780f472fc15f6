import { Command } from 'clipanion';
import { BaseCommand } from '../base-command.js';

export class UsageCommand extends BaseCommand {
  static override paths = [['usage']];
  static override usage = Command.Usage({
    description: 'Print the list of commands and their options',
    examples: [['Show every command', '$0 usage']],
  });

  async run(): Promise<number> {
    this.out(this.cli.usage(null, { detailed: false }));
    return 0;
  }
}
