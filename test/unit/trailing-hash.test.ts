import { createHash, randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { trailingHasher } from '../../activities/trailing-hash.js';
import { tempDir } from '../support/pipeline-fixtures.js';

const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');

describe('trailingHasher hashes a file behind its writer', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    root = await tempDir('snf-trailing-');
  });
  afterAll(async () => {
    await root.cleanup();
  });

  test('a file written in uneven pieces, the hasher told after each, hashes to the sha512 of the whole', async () => {
    const body = randomBytes(5 * 1024 * 1024 + 12345);
    const file = path.join(root.dir, 'pieces.bin');
    const fh = await open(file, 'w');
    const hasher = trailingHasher(file);
    let at = 0;
    for (const size of [1, 70_000, 3 * 1024 * 1024, 999, body.length]) {
      const piece = body.subarray(at, Math.min(body.length, at + size));
      await fh.write(piece, 0, piece.length, at);
      at += piece.length;
      hasher.advance(at);
      if (at === body.length) break;
    }
    await fh.close();
    expect(await hasher.finish(body.length)).toEqual({ bytes: body.length, sha512: sha512(body) });
  });

  test('bytes already in the file (a resumed download) are hashed too', async () => {
    const body = randomBytes(300_000);
    const file = path.join(root.dir, 'resumed.bin');
    await writeFile(file, body.subarray(0, 100_000));
    const hasher = trailingHasher(file, { available: 100_000 });
    const fh = await open(file, 'r+');
    await fh.write(body, 100_000, body.length - 100_000, 100_000);
    await fh.close();
    expect(await hasher.finish(body.length)).toEqual({ bytes: body.length, sha512: sha512(body) });
  });

  test('a file shorter than the bytes announced fails, naming both counts', async () => {
    const file = path.join(root.dir, 'short.bin');
    await writeFile(file, randomBytes(1000));
    await expect(trailingHasher(file).finish(5000)).rejects.toThrow(
      /has 1000 bytes, fewer than the 5000 written to it/,
    );
  });

  test('an abort stops the thread and finish() rejects with the abort reason', async () => {
    const file = path.join(root.dir, 'aborted.bin');
    await writeFile(file, randomBytes(1000));
    const controller = new AbortController();
    const hasher = trailingHasher(file, { signal: controller.signal });
    hasher.advance(500);
    const reason = new Error('a newer attempt took over');
    controller.abort(reason);
    await expect(hasher.finish(1000)).rejects.toBe(reason);
  });
});
