/**
 * The folders are floors: a folder imports only from the floors below it, never from its own floor
 * or above. So no two folders import each other, and a lower part (the cloud targets, the
 * sources) never reaches back into the steps that use it. Type-only imports count too: they are
 * still a dependency a reader has to follow.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/cli.js';

/** Bottom first. Folders on one floor (the sources) may not import each other. */
const FLOORS: readonly (readonly string[])[] = [
  ['core'],
  ['runtime'],
  ['clouds'],
  ['image-lists', 'oci'],
  ['subscriptions'],
  ['activities'],
  ['workflows'],
  ['bridge'],
  ['worker'],
  ['cli'],
];

const floorOf = new Map(FLOORS.flatMap((folders, floor) => folders.map((folder) => [folder, floor] as const)));

function sources(folder: string): string[] {
  return readdirSync(path.join(ROOT, folder), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => path.relative(ROOT, path.join(entry.parentPath, entry.name)));
}

/** Every relative import of a file (static, `import type`, re-exports and dynamic imports), as a path from the root. */
function importsOf(file: string): string[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const found = [...text.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]);
  return found.map((spec) => path.normalize(path.join(path.dirname(file), spec)));
}

const edges = [...floorOf.keys()].flatMap((folder) =>
  sources(folder).flatMap((file) =>
    importsOf(file)
      .map((target) => ({ file, target, from: folder, to: target.split(path.sep)[0] }))
      .filter((edge) => edge.to !== edge.from),
  ),
);

test('every folder of the code is on a floor', () => {
  const folders = readdirSync(ROOT, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && sources(entry.name).length > 0)
    .map((entry) => entry.name)
    .filter(
      (name) => !['node_modules', 'test', 'bench', 'dist', 'scripts', 'docker', 'packaging', 'data'].includes(name),
    )
    .filter((name) => !name.startsWith('.'));
  expect(folders.filter((folder) => !floorOf.has(folder))).toEqual([]);
});

test('the imports go down only: no folder imports one on its own floor or above it', () => {
  const upward = edges
    .filter((edge) => !floorOf.has(edge.to) || floorOf.get(edge.to)! >= floorOf.get(edge.from)!)
    .map((edge) => `${edge.file} imports ${edge.target}`);
  expect(upward).toEqual([]);
});

test('so no two folders import each other', () => {
  const pairs = new Set(edges.map((edge) => `${edge.from}>${edge.to}`));
  const mutual = [...pairs].filter((pair) => pairs.has(pair.split('>').reverse().join('>')));
  expect(mutual).toEqual([]);
});
