/**
 * Folder confinement: whether a path a message or a command line names lies inside the folders
 * the configuration allows. One rule for every caller (file: image URLs, vmcatcher's cache, file:
 * image lists): symlinks are resolved on both sides, `..` cannot climb out, and folders are
 * compared by path, not by prefix.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError } from './errors.js';

/** Is `file` the folder `folder` or below it? Both absolute and real. `/srv/lists-evil` is not in `/srv/lists`. */
export function isInsideFolder(file: string, folder: string): boolean {
  const rel = path.relative(folder, file);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** Is `file` (a real path) inside one of `folders` (real paths)? */
export function isInsideFolders(file: string, folders: readonly string[]): boolean {
  return folders.some((folder) => isInsideFolder(file, folder));
}

/**
 * Where `candidate` really is (symlinks followed), and whether that lies inside one of `folders`
 * (resolved too; a folder that does not exist holds nothing). A relative path or one with `..`
 * segments is refused outright, so no path is ever "normalised" into an allowed folder. When the
 * candidate does not exist, realpath's error is thrown as it is, for the caller to word.
 */
export async function realPathInFolders(
  candidate: string,
  folders: readonly string[],
  what: string,
): Promise<{ real: string; inside: boolean }> {
  if (!path.isAbsolute(candidate) || candidate.split(/[\\/]/).includes('..')) {
    throw new InvalidInputError(`${what} ${candidate} must be an absolute path without '..'`);
  }
  const real = await realpath(candidate);
  const realFolders = await Promise.all(folders.map((folder) => realpath(folder).catch(() => undefined)));
  return {
    real,
    inside: isInsideFolders(
      real,
      realFolders.filter((f): f is string => f !== undefined),
    ),
  };
}
