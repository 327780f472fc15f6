/**
 * The acquire step: the image file of an event in the per-workflow work folder, verified against
 * what the event promised. How the bytes are got is a fetcher's (activities/fetchers/).
 */
import type { Config } from '../core/config.js';
import { InvalidInputError } from '../core/errors.js';
import { EVENT_FIELDS, type ImageEvent } from '../core/event.js';
import type { Logger } from '../core/logging.js';
import { cancellationSignal } from '../runtime/context.js';
import type { ActivityDeps } from '../runtime/deps.js';
import type { Attempt } from './fetchers/fetcher.js';
import { fetcherFor } from './fetchers/index.js';
import type { AcquireInput, AcquiredImage } from './types.js';
import { acquireOnce } from './verified-files.js';
import { withWorkDir } from './workspace.js';

/** The name the image was published under: the last URL segment, else the cache file name. */
function publishedFileName(event: Pick<ImageEvent, 'uri' | 'filename'>): string | undefined {
  if (event.uri) {
    try {
      const segment = new URL(event.uri).pathname.split('/').filter(Boolean).pop();
      if (segment) return decodeURIComponent(segment);
    } catch {
      // not a URL: fall back to the file name
    }
  }
  return event.filename;
}

/**
 * Whether an event may be registered as it is: every checksum it carries is checked against the
 * bytes whatever its origin, and one that carries none is registered only where the site allows
 * it (`security.allowUnverifiedImages`), except a vmcatcher cache file (vmcatcher verified it
 * against its signed image list) and the operator's own command (`register-now`, `transform`).
 * Checked in the acquire step, before a byte is fetched: every registration (queue, subscription,
 * register-now) goes through it, and it is the only step that reads the bytes. Throws
 * InvalidInputError (permanent) naming the setting.
 */
function checkVerifiable(config: Config, event: ImageEvent, logger?: Logger): void {
  if (event.checksumSha512 || event.checksumSha256) return;
  const fromCache = event.type === 'AvailablePostfix' && Boolean(event.cacheDir && event.filename);
  const image = `image ${event.imageId ?? '?'}${event.imageListId ? ` of ${event.imageListId}` : ''}`;
  if (fromCache) return;
  if (config.security.allowUnverifiedImages || event.origin === 'command') {
    logger?.warn(
      { imageId: event.imageId, imageListId: event.imageListId, origin: event.origin },
      `${image} carries no checksum: registered UNVERIFIED (${event.origin === 'command' ? "the operator's own command" : 'security.allowUnverifiedImages = true'})`,
    );
    return;
  }
  throw new InvalidInputError(
    `${image}: the event carries no checksum (${EVENT_FIELDS.checksumSha512} or ${EVENT_FIELDS.checksumSha256}); ` +
      'unverified images are refused unless security.allowUnverifiedImages = true',
  );
}

/**
 * Gets the image file of an event into the per-workflow work folder, verified against the
 * event's sha512 and size, by the first fetcher that takes the event (activities/fetchers/):
 * copied out of vmcatcher's cache, read from an allowed folder (`file:`), a registry layer by
 * digest, or downloaded (resumable across activity retries). The attempt holds the work
 * folder while it runs: an attempt that Temporal gave up on (heartbeat timeout) is stopped by
 * its retry and then touches no file (see claimWorkDir).
 */
export async function acquireImage(deps: ActivityDeps, input: AcquireInput): Promise<AcquiredImage> {
  const { event } = input;
  checkVerifiable(deps.config, event, deps.logger);
  const fileName = publishedFileName(event);
  return withWorkDir(deps.config, input.workflowId, async (lease) => {
    const cancel = cancellationSignal();
    const attempt: Attempt = {
      deps,
      lease,
      expected: { size: event.size, sha512: event.checksumSha512, sha256: event.checksumSha256 },
      signal: cancel ? AbortSignal.any([cancel, lease.signal]) : lease.signal,
    };
    // A revision on its way to several clouds is got once on this host (verified-files.ts).
    return acquireOnce(deps.config, deps.logger, event, lease, async () => ({
      ...(await fetcherFor(event).fetch({ attempt, input, fileName })),
      fileName,
    }));
  });
}
