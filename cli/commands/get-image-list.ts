import { Command } from 'clipanion';
import { EXIT } from '../base-command.js';
import { ImageListCommand } from '../image-list-command.js';

export class GetImageListCommand extends ImageListCommand {
  static override paths = [['get-image-list']];
  static override usage = Command.Usage({
    description: 'Fetch and verify an image list, and print its JSON',
    details: `
      Prints the JSON content of the list (for a signed list, the content openssl verified)
      on stdout. The signature policy applies as for every command that reads a list.
    `,
    examples: [
      [
        'Save a verified copy of a list',
        '$0 get-image-list --image-list-url https://cernvm.cern.ch/releases/image.list > image.list.json',
      ],
    ],
  });

  async run(): Promise<number> {
    const read = await this.readList();
    this.out(read.json);
    return EXIT.ok;
  }
}
