import { Option } from 'clipanion';
import { readImageList, type ReadImageList } from '../image-lists/read.js';
import { parseImageListUrl } from '../image-lists/fetch.js';
import { TOKEN_ENV } from '../image-lists/subscription.js';
import { registerSecrets } from '../core/logging.js';
import { ConfiguredCommand } from './base-command.js';

/** The options and the reading step shared by parse-image-list, get-image-list and enqueue-from-image-list. */
export abstract class ImageListCommand extends ConfiguredCommand {
  imageListUrl = Option.String('--image-list-url', {
    required: true,
    description: 'Image list location: https:, http: or file: (file: only inside security.allowedFileFolders)',
  });
  token = Option.String('--token', {
    description: `AppDB token, sent as HTTP Basic token:x-oauth-basic to the list host only. Visible to other users in ps: prefer --token-file, --credential or $${TOKEN_ENV}`,
  });
  tokenFile = Option.String('--token-file', {
    description: 'Read the AppDB token from this file (one line)',
  });
  credential = Option.String('--credential', {
    description: 'Send the named credential of security.credentials as the token',
  });
  insecureSsl = Option.Boolean('--insecure-ssl', false, {
    description: "Do not check the list server's TLS certificate (debugging only; logged as a warning)",
  });

  protected async readList(): Promise<ReadImageList> {
    // Register before anything can log or fail, including a token written into the URL.
    registerSecrets([this.token?.trim(), safeUrlToken(this.imageListUrl), this.context.env[TOKEN_ENV]?.trim()]);
    const config = await this.config();
    return readImageList({
      url: this.imageListUrl,
      tokens: { token: this.token, tokenFile: this.tokenFile, credential: this.credential, env: this.context.env },
      insecureTls: this.insecureSsl,
      config,
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
