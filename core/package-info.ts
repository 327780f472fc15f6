import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/**
 * The project's root folder, from source (core/), from the build (dist/core/) or from the CLI's
 * bundle (dist/bundle/): the first folder up whose package.json is ours.
 */
export function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const candidate = path.join(dir, 'package.json');
    if (existsSync(candidate) && JSON.parse(readFileSync(candidate, 'utf8')).name === 'snf-vmcatcher') return dir;
    dir = path.dirname(dir);
  }
  throw new Error('cannot find the snf-vmcatcher package.json');
}

export function packageVersion(): string {
  return JSON.parse(readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')).version as string;
}
