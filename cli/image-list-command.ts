import { Option, UsageError } from 'clipanion';
import { readImageList, type ReadImageList } from '../core/image-list/read.js';
import { parseImageListUrl } from '../core/image-list/fetch.js';
import { registerSecrets } from '../core/logging.js';
import { ConfiguredCommand } from './base-command.js';

/** The options and the reading step shared by parse-image-list, get-image-list and enqueue-from-image-list. */
export abstract class ImageListCommand extends ConfiguredCommand {
  imageListUrl = Option.String('--image-list-url', {
    required: true,
    description: 'Image list location: https:, http: or file: (file: only inside security.allowedFileFolders)',
  });
  token = Option.String('--token', {
    description: 'AppDB personal access token, sent as HTTP Basic token:x-oauth-basic to the list host only',
  });
  insecureSsl = Option.Boolean('--insecure-ssl', false, {
    description: 'Do not check the list server\'s TLS certificate (debugging only; logged as a warning)',
  });

  protected async readList(): Promise<ReadImageList> {
    // Register before anything can log or fail, including a token written into the URL.
    registerSecrets([this.token, safeUrlToken(this.imageListUrl)]);
    if (this.token !== undefined && this.token.trim() === '') throw new UsageError('--token is empty');
    const config = await this.config();
    return readImageList({
      url: this.imageListUrl,
      token: this.token,
      insecureTls: this.insecureSsl,
      security: config.security,
      logger: this.log,
    });
  }
}

function safeUrlToken(url: string): string | undefined {
  try {
    return parseImageListUrl(url).token;
  } catch {
    return undefined;
  }
}
