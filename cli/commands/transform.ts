import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'clipanion';
import { acquireImage } from '../../activities/acquire.js';
import { convertToRaw } from '../../activities/convert.js';
import { inspectImage } from '../../activities/inspect.js';
import { OWNER_FILE, removeWorkDir, workDirFor } from '../../activities/workspace.js';
import { InvalidInputError } from '../../core/errors.js';
import { eventFromFlat, EVENT_FIELDS } from '../../core/event.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

export class TransformCommand extends ConfiguredCommand {
  static override paths = [['transform']];
  static override usage = Command.Usage({
    description: 'Download (or read) an image and convert it to a raw disk locally, without Temporal',
    details:
      'Runs the same acquire, inspect and convert steps a worker runs: the format is read from the content (the `--format` hint and the file extension count only when it cannot tell), archives and compressed files are unpacked, and `qemu-img convert` writes the raw disk into a new folder under the working folder. Prints the path of the raw file; delete it when done. On failure nothing is left behind and the exit code is 1.',
    examples: [
      ['Convert a remote OVA', '$0 transform --url https://example.org/appliance.ova'],
      ['A local file, with a format hint', '$0 transform --url file:///srv/images/disk.bin --format raw'],
      [
        'The original spelling',
        '$0 -working-folder /mnt/tmp transform -url https://example.org/x.vmdk.gz -insecure-ssl',
      ],
    ],
  });

  url = Option.String('--url', { required: true, description: 'Where the image is (http, https or file URL)' });
  insecureSsl = Option.Boolean('--insecure-ssl', false, {
    description: 'Do not verify the TLS certificate of the download',
  });
  format = Option.String('--format', {
    description: 'Format hint (hv:format), used only when the content cannot tell',
  });

  async run(): Promise<number> {
    const config = structuredClone(await this.config());
    const logger = this.log;
    let parsed: URL;
    try {
      parsed = new URL(this.url);
    } catch {
      throw new InvalidInputError(`--url '${this.url}' is not a valid URL`);
    }
    if (parsed.protocol === 'file:') {
      // The operator names the file on the command line, so its folder is allowed for this run.
      config.security.allowedFileFolders = [...config.security.allowedFileFolders, path.dirname(fileURLToPath(parsed))];
    }
    // The operator's own command (origin 'command'): it may name an image without a checksum.
    const event = eventFromFlat({ [EVENT_FIELDS.uri]: this.url, [EVENT_FIELDS.format]: this.format }, 'command');
    const deps = { config, logger };
    const workflowId = `transform-${Date.now().toString(36)}-${process.pid}`;
    try {
      const acquired = await acquireImage(deps, { workflowId, event, insecureSsl: this.insecureSsl });
      const info = await inspectImage(deps, {
        path: acquired.path,
        formatHint: this.format,
        fileName: acquired.fileName,
      });
      logger.info(
        { format: info.format, detectedBy: info.detectedBy, details: info.details },
        `${acquired.fileName ?? acquired.path} is ${info.format}`,
      );
      const raw = await convertToRaw(deps, {
        workflowId,
        path: acquired.path,
        workDir: acquired.workDir,
        format: info.format,
      });
      if (acquired.source !== 'file' && acquired.path !== raw.path) {
        await rm(acquired.path, { force: true });
      }
      // The raw file is the user's now: without the marker no work-folder sweep takes it for a workflow's leftovers.
      await rm(path.join(path.dirname(raw.path), OWNER_FILE), { force: true });
      logger.info({ steps: raw.steps, virtualSize: raw.virtualSize }, `Transformed ${this.url} to ${raw.path}.`);
      this.out(`Transformed ${this.url} to ${raw.path}. Do not forget to delete the temporary file.`);
      this.out(raw.path);
      return EXIT.ok;
    } catch (err) {
      await removeWorkDir(config, workDirFor(config, workflowId)).catch(() => undefined);
      throw err;
    }
  }
}
