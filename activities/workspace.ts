import { createHash } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { InvalidInputError } from '../core/errors.js';
import { realPathInFolders } from '../core/paths.js';

/** A workflow id as a folder name: readable, unique (a hash of the id), no path characters. */
function workDirName(workflowId: string): string {
  const readable = workflowId
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._]+/, '')
    .slice(0, 80);
  const hash = createHash('sha256').update(workflowId).digest('hex').slice(0, 12);
  return readable ? `${readable}-${hash}` : hash;
}

export function workDirFor(config: Config, workflowId: string): string {
  return path.join(path.resolve(config.worker.workingFolder), workDirName(workflowId));
}

/** The file in each work folder that names its workflow, so a sweep can ask Temporal about it. */
export const OWNER_FILE = '.workflow.json';

/** Creates (or finds again, on a retry) the per-workflow work folder, readable by us only. */
export async function createWorkDir(config: Config, workflowId: string): Promise<string> {
  const dir = workDirFor(config, workflowId);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  await writeFile(path.join(dir, OWNER_FILE), JSON.stringify({ workflowId }) + '\n', { mode: 0o600 });
  return dir;
}

/** A step's hold on a work folder: it may write there only while `signal` is not aborted. */
export interface WorkDirLease {
  dir: string;
  /** Aborted when a newer attempt of the same workflow takes the folder over. */
  signal: AbortSignal;
  /** Whether this attempt still owns the folder (a replaced attempt must not delete anything). */
  owns(): boolean;
  /** Ends the hold; the attempt that replaced this one may then go on. Idempotent. */
  release(): void;
}

interface Holder {
  controller: AbortController;
  released: Promise<void>;
}
const holders = new Map<string, Holder>();

/** How long a new attempt waits for the one it replaces to stop before giving up (and retrying). */
const TAKEOVER_WAIT_MS = 60_000;

/**
 * One attempt owns a work folder at a time. An activity attempt that timed out keeps running
 * until it notices; when its retry lands on this worker, the retry takes the folder over: the old
 * attempt's lease signal aborts (its streams and child processes stop) and the retry waits for it
 * to let go before touching any file. A worker that died took its attempts (and, through
 * PR_SET_PDEATHSIG, their child processes) with it.
 */
async function claimWorkDir(config: Config, workflowId: string): Promise<WorkDirLease> {
  const dir = workDirFor(config, workflowId);
  const previous = holders.get(dir);
  if (previous) {
    previous.controller.abort(new Error(`a newer attempt took over the work folder ${dir}`));
    const stopped = await Promise.race([
      previous.released.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), TAKEOVER_WAIT_MS).unref()),
    ]);
    if (!stopped)
      throw new Error(`the previous attempt on ${dir} did not stop within ${TAKEOVER_WAIT_MS} ms; will retry`);
  }
  const controller = new AbortController();
  let letGo!: () => void;
  const holder: Holder = { controller, released: new Promise<void>((resolve) => (letGo = resolve)) };
  holders.set(dir, holder);
  await createWorkDir(config, workflowId);
  return {
    dir,
    signal: controller.signal,
    owns: () => holders.get(dir) === holder && !controller.signal.aborted,
    release() {
      if (holders.get(dir) === holder) holders.delete(dir);
      letGo();
    },
  };
}

/** Runs `work` holding the workflow's work folder (see claimWorkDir). */
export async function withWorkDir<T>(
  config: Config,
  workflowId: string,
  work: (lease: WorkDirLease) => Promise<T>,
): Promise<T> {
  const lease = await claimWorkDir(config, workflowId);
  try {
    return await work(lease);
  } finally {
    lease.release();
  }
}

/** Removes a work folder and everything in it; a folder already gone is fine. */
export async function removeWorkDir(config: Config, workDir: string): Promise<void> {
  const root = path.resolve(config.worker.workingFolder);
  const dir = path.resolve(workDir);
  // A workflow input names the folder: never let it point anywhere but under the working folder.
  if (path.dirname(dir) !== root) {
    throw new InvalidInputError(`refusing to remove ${workDir}: not a work folder under ${root}`);
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** A published file name made safe as a local file name (no path, no leading dot, bounded). */
export function safeFileName(name: string | undefined, fallback = 'image'): string {
  const base =
    (name ?? '')
      .replace(/[?#].*$/, '')
      .split(/[\\/]/)
      .pop() ?? '';
  const clean = base
    .replace(/[^A-Za-z0-9._+-]+/g, '_')
    .replace(/^[.\-_]+/, '')
    .slice(-120);
  return clean || fallback;
}

/** The real path of `candidate`, which must lie inside one of `folders` (core/paths.ts). */
export async function resolveInsideFolders(
  candidate: string,
  folders: readonly string[],
  what: string,
): Promise<string> {
  if (!folders.length)
    throw new InvalidInputError(`${what} ${candidate} refused: no folder is allowed for it in the configuration`);
  let found: { real: string; inside: boolean };
  try {
    found = await realPathInFolders(candidate, folders, what);
  } catch (err) {
    if (err instanceof InvalidInputError) throw err;
    throw new InvalidInputError(
      `${what} ${candidate} does not exist: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  if (!found.inside)
    throw new InvalidInputError(`${what} ${candidate} is outside the allowed folders (${folders.join(', ')})`);
  return found.real;
}

/** Whether an attempt in this process holds the work folder `dir` (a sweep must leave it alone). */
export function isWorkDirHeld(dir: string): boolean {
  return holders.has(path.resolve(dir));
}
