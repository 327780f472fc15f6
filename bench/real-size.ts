/**
 * Real sizes through one worker: at least four images of ≥ 2 GiB (qcow2, and gzipped
 * stream-optimized VMDK) served over local HTTP, registered at once by one `snf-vmcatcher worker`
 * with its default two file-step slots: download and verify, unpack, convert with the real
 * qemu-img, prepare and upload with the fakes. Reports the wall time, each image's time, and the
 * peak RSS of every process: the worker, the Temporal server, and each external tool.
 */
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { toStreamOptimizedVmdk, writeLinuxMbr } from '../test/support/disk-images.js';
import {
  BENCH_TMP,
  GiB,
  MiB,
  benchToolchain,
  log,
  peakRssMiB,
  readToolRss,
  rssWrapper,
  round,
  serveFolder,
  sha512File,
  stopAll,
  type BenchResult,
} from './lib.js';
import { registerAtOnce, startSnf, startTemporal, type Proc } from './services.js';

const SIZE_GIB = Number(process.env.SNF_VMCATCHER_BENCH_REAL_GIB ?? 2);
const COUNT = Math.max(4, Number(process.env.SNF_VMCATCHER_BENCH_REAL_IMAGES ?? 4));

/** The images, made once and kept between runs (they take minutes to write). */
async function makeImages(folder: string): Promise<Array<{ name: string; size: number; sha512: string }>> {
  await mkdir(folder, { recursive: true });
  const out = [];
  for (let i = 0; i < COUNT; i++) {
    const name = i % 2 === 0 ? `image-${i}.qcow2` : `image-${i}.vmdk.gz`;
    const file = path.join(folder, name);
    const have = await stat(file).catch(() => undefined);
    if (!have) {
      log(`real-size: writing ${name} (${SIZE_GIB} GiB of random data)`);
      const raw = path.join(folder, `disk-${i}.raw`);
      await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${SIZE_GIB * 1024}`, 'status=none']);
      await writeLinuxMbr(raw, SIZE_GIB * GiB);
      if (name.endsWith('.qcow2')) {
        await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, file]);
      } else {
        const vmdk = path.join(folder, `disk-${i}.vmdk`);
        await toStreamOptimizedVmdk(raw, vmdk);
        await execa('bash', ['-c', 'gzip -1 -c -- "$1" > "$2"', 'gzip', vmdk, file]);
        await rm(vmdk);
      }
      await rm(raw);
    }
    const { size } = await stat(file);
    out.push({ name, size, sha512: await sha512File(file) });
  }
  return out;
}

export async function benchRealSize(): Promise<BenchResult> {
  const dir = path.join(BENCH_TMP, 'real-size');
  const images = await makeImages(path.join(dir, 'images'));
  const run = path.join(dir, 'run');
  await rm(run, { recursive: true, force: true });
  const taskQueue = 'bench-real-size';
  const toolchain = await benchToolchain(run, taskQueue, rssWrapper);
  const rssLog = path.join(run, 'rss.log');
  await writeFile(rssLog, '');
  const server = await serveFolder(path.join(dir, 'images'));
  const temporal = await startTemporal(path.join(run, 'temporal'));
  let worker: Proc | undefined;
  const perImage: Array<{ image: string; sizeGiB: number; wallS: number; outcome: string }> = [];
  let wallMs = 0;
  let workerRss = 0;
  let temporalRss = 0;
  try {
    const env = toolchain.env(temporal.address, { SNF_BENCH_RSS_LOG: rssLog });
    worker = await startSnf(['worker', '--conf', toolchain.conf], env, /worker started/);
    const done = await registerAtOnce(
      temporal.address,
      taskQueue,
      images.map((img) => ({ ...img, url: server.url(img.name) })),
      'real-size',
    );
    wallMs = done.ms;
    const sizes = new Map(images.map((img) => [img.name, img.size]));
    perImage.push(
      ...done.perImage.map((p) => ({
        image: p.image,
        sizeGiB: round((sizes.get(p.image) ?? 0) / GiB, 2),
        wallS: p.s,
        outcome: p.outcome,
      })),
    );
    workerRss = await peakRssMiB(worker.proc.pid);
    temporalRss = await peakRssMiB(temporal.proc.pid);
  } finally {
    await stopAll([() => worker?.stop(), () => temporal.stop(), () => server.close()]);
  }
  const toolRss = await readToolRss(rssLog);
  await rm(run, { recursive: true, force: true });
  const failed = perImage.filter((p) => p.outcome !== 'registered').length;
  const totalGiB = images.reduce((a, i) => a + i.size, 0) / GiB;
  return {
    name: 'real-size',
    title: `Real sizes: ${COUNT} images of ≥ ${SIZE_GIB} GiB through one worker`,
    method:
      `${COUNT} images of ${SIZE_GIB} GiB of random data each (qcow2, and stream-optimized VMDK compressed with gzip -1; ${round(totalGiB, 1)} GiB in all), ` +
      'served by a local HTTP server and sent to their image revision workflows at once; one `snf-vmcatcher worker` with the default configuration ' +
      '(two file-step slots, default timeouts) on a Temporal dev server started by the benchmark. qemu-img is the real one; kamaki and snf-mkimage are the fakes ' +
      "from test/fakes/. Each external program runs under GNU time (its peak RSS); the worker's and the server's peak RSS is their VmHWM at the end.",
    rows: [
      ...perImage.map((p) => ({
        figure: `${p.image} (${p.sizeGiB} GiB) done after`,
        value: `${p.wallS} s (${p.outcome})`,
      })),
      { figure: `all ${COUNT} images`, value: `${round(wallMs / 1000, 1)} s` },
      { figure: 'peak RSS: worker (Node)', value: `${workerRss} MiB` },
      { figure: 'peak RSS: Temporal dev server', value: `${temporalRss} MiB` },
      ...[...toolRss.entries()].map(([name, e]) => ({
        figure: `peak RSS: ${name} (${e.calls} calls, ${round(e.seconds, 0)} s in all)`,
        value: `${e.maxMiB} MiB`,
      })),
    ],
    targets: [{ target: 'no failed workflow', measured: `${failed} failed of ${COUNT}`, met: failed === 0 }],
    notes: [
      `${round(totalGiB, 1)} GiB downloaded, verified, unpacked and converted: ${round((totalGiB * 1024) / (wallMs / 1000), 0)} MiB/s of published image through one worker.`,
    ],
    raw: {
      perImage,
      toolRss: Object.fromEntries(toolRss),
      workerRss,
      temporalRss,
      sizes: images.map((i) => i.size / MiB),
    },
  };
}
