/** Events of vmcatcher's cache hook: the file vmcatcher downloaded and verified, copied out of its cache. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError } from '../../core/errors.js';
import type { ImageEvent } from '../../core/event.js';
import { keepHeartbeating } from '../../runtime/heartbeats.js';
import { diskPolicy, reserveSpace } from '../disk.js';
import type { FileDigest } from '../trailing-hash.js';
import { resolveInsideFolders, safeFileName } from '../workspace.js';
import { checkIntegrity, checkSizeFirst, type Attempt, type Fetcher } from './fetcher.js';
import { failed, Meter, writeHashed } from './http.js';

/** An AvailablePostfix event that names vmcatcher's cache folder and file. */
export const vmcatcherCacheFetcher: Fetcher = {
  takes: (event: ImageEvent) => event.type === 'AvailablePostfix' && Boolean(event.cacheDir && event.filename),
  async fetch({ attempt, input }) {
    const { cacheDir, filename } = input.event;
    return { ...(await copyFromVmcatcherCache(attempt, cacheDir!, filename!)), source: 'vmcatcher-cache' };
  },
};

/**
 * vmcatcher's cache: copied out at once (vmcatcher deletes files it does not know about), the
 * copy hashed behind the writes.
 */
async function copyFromVmcatcherCache(
  attempt: Attempt,
  cacheDir: string,
  fileName: string,
): Promise<{ workDir: string; path: string } & FileDigest> {
  const { config, logger } = attempt.deps;
  if (fileName.includes('/') || fileName.includes('\\') || fileName === '..' || fileName === '.') {
    throw new InvalidInputError(`VMCATCHER_EVENT_FILENAME '${fileName}' must be a plain file name`);
  }
  // Only configured folders: a message must never be able to name /etc as a "cache".
  const allowed = config.security.vmcatcherCacheFolders;
  await resolveInsideFolders(cacheDir, allowed, 'vmcatcher cache folder');
  const source = await resolveInsideFolders(path.join(cacheDir, fileName), allowed, 'vmcatcher cache file');
  const info = await stat(source);
  if (!info.isFile()) throw new InvalidInputError(`vmcatcher cache file ${source} is not a regular file`);
  const what = `vmcatcher cache file ${source}`;
  checkSizeFirst(what, attempt.expected, info.size);
  const dest = path.join(attempt.lease.dir, safeFileName(fileName));
  logger.info({ source, dest }, 'copying the image out of the vmcatcher cache');
  const space = await reserveSpace(attempt.lease.dir, info.size, `the copy of ${what}`, diskPolicy(config));
  const meter = new Meter('copy from the vmcatcher cache', info.size);
  const stopBeating = keepHeartbeating(() => meter.progress());
  try {
    const got = await writeHashed(
      attempt,
      attempt.signal,
      {
        what: `the copy of ${what}`,
        source: createReadStream(source, { highWaterMark: 1024 * 1024 }),
        dest,
        start: 0,
        maxBytes: info.size,
      },
      meter,
    );
    checkIntegrity(what, attempt.expected, got);
    return { workDir: attempt.lease.dir, path: dest, ...got };
  } catch (err) {
    throw await failed(attempt, err, dest, { keepPartial: false, neededBytes: info.size });
  } finally {
    stopBeating();
    space.release();
  }
}
