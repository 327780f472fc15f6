/**
 * The convert step (convertToRaw: qemu-img info checks, then qemu-img convert to raw, with the
 * work-folder bookkeeping) against bare `qemu-img convert -O raw`, on the same 1 GiB qcow2 that
 * holds 1 GiB of random data.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { convertToRaw } from '../activities/convert.js';
import { workDirFor } from '../activities/workspace.js';
import { parseConfig } from '../core/config.js';
import { BENCH_TMP, GiB, REPEATS, log, median, randomFile, round, timed, type BenchResult } from './lib.js';

export async function benchConvert(): Promise<BenchResult> {
  const dir = path.join(BENCH_TMP, 'convert');
  const workflowId = 'bench-convert';
  const work = workDirFor(parseConfig({ worker: { workingFolder: dir } }, 'bench'), workflowId);
  await mkdir(work, { recursive: true });
  const random = await randomFile(path.join(dir, 'random-1g.raw'), GiB);
  const qcow2 = path.join(dir, 'image.qcow2');
  await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', random, qcow2]);
  await rm(random, { force: true });
  const config = parseConfig({ worker: { workingFolder: dir } }, 'bench');
  const logger = pino({ level: 'silent' });
  const runs = { ours: [] as number[], bare: [] as number[] };
  try {
    for (let i = 0; i < REPEATS; i++) {
      const ourRun = await timed(() =>
        convertToRaw({ config, logger }, { workflowId, path: qcow2, workDir: work, format: 'qcow2' }),
      );
      if (ourRun.value.virtualSize !== GiB) throw new Error(`convertToRaw returned ${JSON.stringify(ourRun.value)}`);
      await rm(ourRun.value.path, { force: true });
      runs.ours.push(ourRun.ms);
      const out = path.join(dir, 'bare.raw');
      runs.bare.push(
        (await timed(() => execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', '--', qcow2, out]))).ms,
      );
      await rm(out, { force: true });
      log(`convert #${i + 1}: ours ${round(runs.ours[i], 0)} ms, qemu-img convert ${round(runs.bare[i], 0)} ms`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const ours = median(runs.ours);
  const bare = median(runs.bare);
  const ratio = ours / bare;
  return {
    name: 'convert',
    title: 'Convert step against bare qemu-img convert (1 GiB qcow2 of random data)',
    method:
      `A qcow2 made by qemu-img from 1 GiB of random bytes (so 1 GiB of real clusters); ${REPEATS} interleaved repeats, output deleted after each. ` +
      '"ours" is convertToRaw (activities/convert.ts) called directly: qemu-img info (backing file, extents, virtual size checks), then qemu-img convert -O raw into the work folder. ' +
      'The reference is `qemu-img convert -f qcow2 -O raw` of the same file.',
    rows: [
      { contender: 'ours (convertToRaw)', 'median ms': round(ours, 0), ratio: round(ratio, 3) },
      { contender: 'qemu-img convert', 'median ms': round(bare, 0), ratio: 1 },
    ],
    targets: [
      { target: 'convert ≤ 1.05 × bare qemu-img convert', measured: `${round(ratio, 3)} ×`, met: ratio <= 1.05 },
    ],
    raw: runs,
  };
}
