import { createHash } from 'node:crypto';
import { chmod, mkdir, realpath, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { InvalidInputError } from '../core/errors.js';

/** A workflow id as a folder name: readable, unique (a hash of the id), no path characters. */
export function workDirName(workflowId: string): string {
  const readable = workflowId.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+/, '').slice(0, 80);
  const hash = createHash('sha256').update(workflowId).digest('hex').slice(0, 12);
  return readable ? `${readable}-${hash}` : hash;
}

export function workDirFor(config: Config, workflowId: string): string {
  return path.join(path.resolve(config.worker.workingFolder), workDirName(workflowId));
}

/** Creates (or finds again, on a retry) the per-workflow work folder, readable by us only. */
export async function createWorkDir(config: Config, workflowId: string): Promise<string> {
  const dir = workDirFor(config, workflowId);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  return dir;
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
  const base = (name ?? '').replace(/[?#].*$/, '').split(/[\\/]/).pop() ?? '';
  const clean = base.replace(/[^A-Za-z0-9._+-]+/g, '_').replace(/^[.\-_]+/, '').slice(-120);
  return clean || fallback;
}

/**
 * Resolves `candidate` (following symlinks) and checks it lies inside one of `folders`
 * (also resolved). Refuses `..` segments outright, so no path is ever "normalised" into
 * an allowed folder. Returns the real path.
 */
export async function resolveInsideFolders(candidate: string, folders: readonly string[], what: string): Promise<string> {
  if (!path.isAbsolute(candidate) || candidate.split(/[\\/]/).includes('..')) {
    throw new InvalidInputError(`${what} ${candidate} must be an absolute path without '..'`);
  }
  if (!folders.length) throw new InvalidInputError(`${what} ${candidate} refused: no folder is allowed for it in the configuration`);
  let real: string;
  try {
    real = await realpath(candidate);
  } catch (err) {
    throw new InvalidInputError(`${what} ${candidate} does not exist: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  for (const folder of folders) {
    let realFolder: string;
    try {
      realFolder = await realpath(folder);
    } catch {
      continue;
    }
    if (real === realFolder || real.startsWith(realFolder.endsWith(path.sep) ? realFolder : realFolder + path.sep)) return real;
  }
  throw new InvalidInputError(`${what} ${candidate} is outside the allowed folders (${folders.join(', ')})`);
}
