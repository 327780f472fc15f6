/**
 * The verified files of a host, one per image revision, shared by the registrations of that
 * revision into several clouds (a deployment of several `clouds`; a site of one cloud keeps none):
 * the first acquire of a revision on this host gets and verifies the file; every other registration
 * of the same revision here links the verified file into its own work folder (a hard link: no
 * copy, no space, no download).
 *
 * The store keeps a link of its own (`<workingFolder>/.verified/<revision>/`) while any work folder
 * holds one, and for `worker.verifiedFileKeepMs` after the last let go, so a cloud that was down
 * catches up without a new download; then the sweep removes it, or sooner when a step is short of
 * disk space (disk.ts asks for idle files back before it refuses). The file is never written once
 * verified: every step writes new files beside it, and removing a work folder removes only its link.
 */
import { link, mkdir, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.js';
import type { ImageEvent } from '../core/event.js';
import type { Logger } from '../core/logging.js';
import { whileHeartbeating } from '../runtime/heartbeats.js';
import { onShortOfSpace } from './disk.js';
import type { AcquiredImage } from './types.js';
import type { WorkDirLease } from './workspace.js';

/** The store's folder under the working folder: a name no work folder has (they never start with a dot). */
export const VERIFIED_FOLDER = '.verified';

const DATA = 'image';
const META = 'meta.json';

type Stored = Omit<AcquiredImage, 'workDir' | 'path'> & { name: string };

/** Which verified file serves an event: its checksum names the bytes. None without one (nothing to share by). */
function revisionKey(event: ImageEvent): string | undefined {
  if (event.checksumSha512) return `sha512-${event.checksumSha512.toLowerCase()}`;
  if (event.checksumSha256) return `sha256-${event.checksumSha256.toLowerCase()}`;
  return undefined;
}

function storeRoot(config: Config): string {
  return path.join(path.resolve(config.worker.workingFolder), VERIFIED_FOLDER);
}

/** The acquires of this process getting a revision right now, by its key: the others wait for them. */
const gettingNow = new Map<string, Promise<unknown>>();

/** The stored file of a revision, when there is one that fits what the event promised. */
async function lookUp(entry: string, size: number | undefined): Promise<Stored | undefined> {
  try {
    const meta = JSON.parse(await readFile(path.join(entry, META), 'utf8')) as Stored;
    const data = await stat(path.join(entry, DATA));
    if (data.size !== meta.bytes || (size !== undefined && size !== meta.bytes)) return undefined;
    return meta;
  } catch {
    return undefined;
  }
}

/** Hard-links `from` to `to`, replacing what `to` was (a retry's partial file). */
async function linkOver(from: string, to: string): Promise<void> {
  await unlink(to).catch(() => undefined);
  await link(from, to);
}

/**
 * The event's image in the attempt's work folder: linked from the host's verified copy of its
 * revision when there is one, else got by `get` (the fetchers), and then kept as that copy. When
 * another registration of this process is getting the same revision, this one waits for it
 * (heartbeating) rather than download it a second time, and gets it itself only if that one failed.
 */
export async function acquireOnce(
  config: Config,
  logger: Logger,
  event: ImageEvent,
  lease: WorkDirLease,
  get: () => Promise<AcquiredImage>,
): Promise<AcquiredImage> {
  const key = revisionKey(event);
  // Only a deployment of several clouds registers one revision more than once.
  if (!key || Object.keys(config.clouds).length < 2) return get();
  const entry = path.join(storeRoot(config), key);
  for (;;) {
    const stored = await lookUp(entry, event.size);
    if (stored) {
      const { name, ...image } = stored;
      const file = path.join(lease.dir, name);
      await linkOver(path.join(entry, DATA), file);
      logger.info(
        { revision: key, workDir: lease.dir },
        'the verified file of this revision is on the host already (another cloud’s registration got it): linked, not downloaded',
      );
      return { ...image, workDir: lease.dir, path: file, shared: true };
    }
    const running = gettingNow.get(key);
    if (!running) break;
    await whileHeartbeating({ step: `wait for the download of the same revision by another registration` }, () =>
      running.catch(() => undefined),
    );
    if (lease.signal.aborted) throw lease.signal.reason;
  }
  const getting = get();
  gettingNow.set(key, getting);
  try {
    const got = await getting;
    await keep(entry, got).catch((err: unknown) =>
      logger.warn({ revision: key, error: String(err) }, 'could not keep the verified file for other clouds'),
    );
    return got;
  } finally {
    gettingNow.delete(key);
  }
}

/** Makes the work folder's verified file the host's copy of its revision (a second link to it). */
async function keep(entry: string, got: AcquiredImage): Promise<void> {
  await rm(entry, { recursive: true, force: true });
  await mkdir(entry, { recursive: true, mode: 0o700 });
  await link(got.path, path.join(entry, DATA));
  const { workDir: _w, path: file, shared: _s, ...image } = got;
  const meta: Stored = { ...image, name: path.basename(file) };
  await writeFile(path.join(entry, META), JSON.stringify(meta) + '\n', { mode: 0o600 });
}

/**
 * Removes the verified files no work folder holds any more (the store's is their only link) and
 * that have not been let go of within `keepMs` (the link count's change time says when).
 * Returns the revisions removed.
 */
export async function removeIdleVerifiedFiles(config: Config, keepMs: number): Promise<string[]> {
  const root = storeRoot(config);
  const removed: string[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (gettingNow.has(name)) continue;
    const entry = path.join(root, name);
    const data = await stat(path.join(entry, DATA)).catch(() => undefined);
    if (data && (data.nlink > 1 || Date.now() - data.ctimeMs < keepMs)) continue;
    await rm(entry, { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** A step short of space gets the idle verified files' space back before it is refused. */
export function reclaimIdleVerifiedFilesWhenShort(config: Config, logger: Logger): void {
  onShortOfSpace(async () => {
    const removed = await removeIdleVerifiedFiles(config, 0);
    if (removed.length)
      logger.info({ removed }, `short of disk space: removed ${removed.length} idle verified file(s)`);
    return removed.length > 0;
  });
}
