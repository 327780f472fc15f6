import { Command } from 'clipanion';
import { redactConfig } from '../../core/config.js';
import { ConfiguredCommand } from '../base-command.js';

export class ShowConfCommand extends ConfiguredCommand {
  static override paths = [['show-conf']];
  static override usage = Command.Usage({
    description: 'Print the effective configuration as JSON, defaults included, secrets redacted',
    details:
      'Loads the file given with --conf (HOCON or JSON), applies environment overrides and defaults, validates it, and prints the result. A wrong key is reported with the key and the file.',
    examples: [
      ['Show the configuration', '$0 show-conf --conf /etc/snf-vmcatcher/application.conf'],
      ['The original spelling', '$0 -v show-conf -conf application.conf'],
    ],
  });

  async run(): Promise<number> {
    const config = await this.config();
    this.out(JSON.stringify(redactConfig(config), null, 2));
    return 0;
  }
}
