/** `file:` URLs: an image already on the host, used in place. */
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { InvalidInputError } from '../../core/errors.js';
import type { ImageEvent } from '../../core/event.js';
import { keepHeartbeating } from '../../runtime/heartbeats.js';
import { trailingHasher, type FileDigest } from '../trailing-hash.js';
import { resolveInsideFolders } from '../workspace.js';
import { checkIntegrity, checkSizeFirst, imageUrl, type Attempt, type Fetcher } from './fetcher.js';

export const localFileFetcher: Fetcher = {
  takes: (event: ImageEvent) => imageUrl(event).protocol === 'file:',
  async fetch({ attempt, input }) {
    return { ...(await useLocalFile(attempt, imageUrl(input.event))), source: 'file' };
  },
};

/** `file:` URL: used in place (confined to the allowed folders), hashed on a thread while heartbeating. */
async function useLocalFile(attempt: Attempt, url: URL): Promise<{ workDir: string; path: string } & FileDigest> {
  const { config, logger } = attempt.deps;
  // Percent-decoded (the original used the raw path), then confined to the allowed folders.
  const source = await resolveInsideFolders(fileURLToPath(url), config.security.allowedFileFolders, 'file: URL');
  const info = await stat(source);
  if (!info.isFile()) throw new InvalidInputError(`${source} is not a regular file`);
  checkSizeFirst(source, attempt.expected, info.size);
  const hasher = trailingHasher(source, {
    available: info.size,
    signal: attempt.signal,
    sha256: attempt.expected.sha256 !== undefined,
  });
  const stopBeating = keepHeartbeating(() => ({
    step: 'checksum of the local file',
    bytesDone: hasher.hashed(),
    bytesTotal: info.size,
  }));
  try {
    const got = await hasher.finish(info.size);
    checkIntegrity(source, attempt.expected, got);
    logger.info({ path: source, bytes: got.bytes }, 'using the local image file in place');
    return { workDir: attempt.lease.dir, path: source, ...got };
  } finally {
    stopBeating();
    await hasher.stop();
  }
}
