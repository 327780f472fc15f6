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
import type { AcquiredImage, RawImage } from './types.js';
import type { WorkDirLease } from './workspace.js';

/** The store's folder under the working folder: a name no work folder has (they never start with a dot). */
export const VERIFIED_FOLDER = '.verified';

/** The verified file's name in its entry; converted disks are `for-<formats>` beside it. */
const DATA = 'image';

/** Which verified file serves an event: its checksum names the bytes. None without one (nothing to share by). */
function revisionKey(event: ImageEvent): string | undefined {
  if (event.checksumSha512) return `sha512-${event.checksumSha512.toLowerCase()}`;
  if (event.checksumSha256) return `sha256-${event.checksumSha256.toLowerCase()}`;
  return undefined;
}

function storeRoot(config: Config): string {
  return path.join(path.resolve(config.worker.workingFolder), VERIFIED_FOLDER);
}

/** The steps of this process making a file of the store right now (entry and file): the others wait for them. */
const makingNow = new Map<string, Promise<unknown>>();

/** A file of the store (`entry/data`) with what the step that made it returned (`entry/data.json`). */
interface Kept<R> {
  entry: string;
  data: string;
  /** Whether the file fits (the event's promised size, …); a file that does not is got anew. */
  fits?(result: R): boolean;
}

/** The kept result, when its file is there, whole, and fits. */
async function lookUp<R extends { bytes: number }>(kept: Kept<R>): Promise<(R & { name: string }) | undefined> {
  try {
    const result = JSON.parse(await readFile(path.join(kept.entry, `${kept.data}.json`), 'utf8')) as R & {
      name: string;
    };
    const data = await stat(path.join(kept.entry, kept.data));
    if (data.size !== result.bytes || (kept.fits && !kept.fits(result))) return undefined;
    return result;
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
 * The result of a step for the attempt's work folder: linked from the store when an earlier run of
 * the same step (for another cloud) kept its file, else made by `make`, then kept. When another
 * registration of this process is making it right now, this one waits for it (heartbeating) rather
 * than make it a second time, and makes it itself only if that one failed.
 */
async function once<R extends { path: string; bytes: number }>(
  logger: Logger,
  kept: Kept<R>,
  lease: WorkDirLease,
  what: string,
  make: () => Promise<R>,
): Promise<R> {
  const key = `${kept.entry}\u0000${kept.data}`;
  for (;;) {
    const stored = await lookUp(kept);
    if (stored) {
      const { name, ...result } = stored;
      const file = path.join(lease.dir, name);
      await linkOver(path.join(kept.entry, kept.data), file);
      logger.info(
        { kept: path.basename(kept.entry), workDir: lease.dir },
        `${what} of this revision is on the host already (another cloud’s registration made it): linked, not made again`,
      );
      return { ...(result as unknown as R), path: file };
    }
    const running = makingNow.get(key);
    if (!running) break;
    await whileHeartbeating({ step: `wait for ${what} by another registration of the same revision` }, () =>
      running.catch(() => undefined),
    );
    if (lease.signal.aborted) throw lease.signal.reason;
  }
  const making = make();
  makingNow.set(key, making);
  try {
    const made = await making;
    await keep(kept, made).catch((err: unknown) =>
      logger.warn({ kept: path.basename(kept.entry), error: String(err) }, `could not keep ${what} for other clouds`),
    );
    return made;
  } finally {
    makingNow.delete(key);
  }
}

/** Makes the work folder's file the store's (a second link to it), with the step's result beside it. */
async function keep<R extends { path: string }>(kept: Kept<R>, made: R): Promise<void> {
  await mkdir(kept.entry, { recursive: true, mode: 0o700 });
  const data = path.join(kept.entry, kept.data);
  await unlink(data).catch(() => undefined);
  await link(made.path, data);
  const { path: file, ...result } = made;
  await writeFile(`${data}.json`, JSON.stringify({ ...result, name: path.basename(file) }) + '\n', { mode: 0o600 });
}

/** Whether this deployment registers one revision into several clouds (else nothing is kept). */
function sharing(config: Config): boolean {
  return Object.keys(config.clouds).length > 1;
}

/**
 * The event's image in the attempt's work folder: linked from the host's verified copy of its
 * revision when there is one, else got by `get` (the fetchers), and then kept as that copy.
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
  if (!key || !sharing(config)) return get();
  const kept: Kept<AcquiredImage> = {
    entry: path.join(storeRoot(config), key),
    data: DATA,
    fits: (image) => event.size === undefined || event.size === image.bytes,
  };
  let got = false;
  const image = await once(logger, kept, lease, 'the verified file', async () => {
    got = true;
    return get();
  });
  return got ? image : { ...image, workDir: lease.dir, shared: true };
}

/**
 * The converted disk of a verified file kept here (the acquired file is a link to it): linked from
 * the store when another cloud's registration already converted it for the same formats, else
 * converted by `convert`, then kept. A disk kept as it is (the cloud takes its format) is the
 * verified file itself: nothing more to keep.
 */
export async function convertOnce(
  config: Config,
  logger: Logger,
  input: string,
  keepFormats: readonly string[],
  lease: WorkDirLease,
  convert: () => Promise<RawImage>,
): Promise<RawImage> {
  if (!sharing(config)) return convert();
  const entry = await entryOf(config, input);
  if (!entry) return convert();
  const kept: Kept<RawImage> = { entry, data: `for-${keepFormats.join('+')}` };
  const made = await once(logger, kept, lease, `the disk converted for ${keepFormats.join(', ')}`, async () => {
    const result = await convert();
    // Kept as it is: the verified file itself, already in the store.
    if (path.resolve(result.path) === path.resolve(input)) throw new KeptAsItIs(result);
    return result;
  }).catch((err: unknown) => {
    if (err instanceof KeptAsItIs) return err.result;
    throw err;
  });
  return made;
}

/** convertOnce's way out of `once` for a disk kept as it is (nothing to keep). */
class KeptAsItIs extends Error {
  constructor(readonly result: RawImage) {
    super('kept as it is');
  }
}

/** The store's entry whose verified file `file` is (the same inode), if any. */
async function entryOf(config: Config, file: string): Promise<string | undefined> {
  const of = await stat(file).catch(() => undefined);
  if (!of || of.nlink < 2) return undefined;
  const root = storeRoot(config);
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const data = await stat(path.join(root, name, DATA)).catch(() => undefined);
    if (data && data.ino === of.ino && data.dev === of.dev) return path.join(root, name);
  }
  return undefined;
}

/**
 * Removes the verified files no work folder holds any more (the store's is their only link) and
 * that have not been let go of within `keepMs` (the link count's change time says when).
 * Returns the revisions removed.
 */
export async function removeIdleVerifiedFiles(config: Config, keepMs: number): Promise<string[]> {
  const root = storeRoot(config);
  const removed: string[] = [];
  const busy = new Set([...makingNow.keys()].map((key) => key.split('\u0000')[0]));
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const entry = path.join(root, name);
    if (busy.has(entry)) continue;
    // Held while any of its files (the verified one, a converted one) has another link, or let go of lately.
    const files = await readdir(entry).catch(() => [] as string[]);
    const stats = await Promise.all(files.map((f) => stat(path.join(entry, f)).catch(() => undefined)));
    if (stats.some((st) => st && st.isFile() && (st.nlink > 1 || Date.now() - st.ctimeMs < keepMs))) continue;
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
