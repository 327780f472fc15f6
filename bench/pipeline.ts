/**
 * The whole pipeline against a plain script: 4 qcow2 images of 2 GiB (mostly incompressible
 * data, made with the real qemu-img) served by nginx, registered by one `snf-vmcatcher worker`
 * (sent at once, as a subscription or a queue would), against the same 4 done one after another
 * by a shell script: `curl -o`, `sha512sum -c`, `qemu-img convert -O raw`, the fake upload.
 * Wall time side by side, and peak memory.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import {
  BENCH_TMP,
  GiB,
  type QcowImage,
  benchToolchain,
  log,
  makeQcowImages,
  median,
  peakRssMiB,
  readToolRss,
  round,
  rssWrapper,
  serveWithNginx,
  stopAll,
  timed,
  type BenchResult,
} from './lib.js';
import { registerAtOnce, startSnf, startTemporal, type Proc } from './services.js';

const SIZE_GIB = Number(process.env.SNF_VMCATCHER_BENCH_PIPELINE_GIB ?? 2);
const COUNT = 4;
/** Each repeat moves 2 × 8 GiB through the machine: one by default (`SNF_VMCATCHER_BENCH_PIPELINE_REPEATS`). */
const PIPELINE_REPEATS = Math.max(1, Number(process.env.SNF_VMCATCHER_BENCH_PIPELINE_REPEATS ?? 1));

/** The reference: the same four images, one after another, by a plain shell script. */
const SCRIPT = `#!/bin/bash
# usage: script.sh WORK_DIR BASE_URL NAME SHA512 [NAME SHA512]...
set -euo pipefail
work=$1; base=$2; shift 2
kamaki container create images >/dev/null 2>&1 || true
while [ $# -gt 0 ]; do
  name=$1; sha=$2; shift 2
  curl -sS --fail -o "$work/$name" "$base/$name"
  echo "$sha  $work/$name" | sha512sum -c --quiet -
  qemu-img convert -f qcow2 -O raw "$work/$name" "$work/$name.raw"
  kamaki file upload "$work/$name.raw" "/images/$name.raw" -f --no-progress-bar 2>/dev/null
  rm -f "$work/$name" "$work/$name.raw"
done
`;

interface ScriptRun {
  ms: number;
  maxRssMiB: number;
}

async function runScript(
  dir: string,
  baseUrl: string,
  images: QcowImage[],
  env: Record<string, string>,
): Promise<ScriptRun> {
  const work = path.join(dir, 'script-work');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const script = path.join(dir, 'script.sh');
  await writeFile(script, SCRIPT, { mode: 0o755 });
  const timeLog = path.join(dir, 'script-time.log');
  const args = images.flatMap((i) => [i.name, i.sha512]);
  const { ms } = await timed(() =>
    execa('/usr/bin/time', ['-o', timeLog, '-f', '%M', script, work, baseUrl, ...args], { env }),
  );
  const maxRssKiB = Number((await readFile(timeLog, 'utf8')).trim().split('\n').pop());
  await rm(work, { recursive: true, force: true });
  return { ms, maxRssMiB: round(maxRssKiB / 1024, 0) };
}

interface WorkerRun {
  ms: number;
  /** Per external program the worker ran: calls, seconds in all, largest peak RSS. */
  tools: Record<string, { maxMiB: number; calls: number; seconds: number }>;
  perImage: Array<{ image: string; s: number; outcome: string }>;
  workerRssMiB: number;
}

async function runWorker(dir: string, baseUrl: string, images: QcowImage[], repeat: number): Promise<WorkerRun> {
  const run = path.join(dir, `worker-${repeat}`);
  await rm(run, { recursive: true, force: true });
  const taskQueue = 'bench-pipeline';
  // The script does not prepare the image (snf-mkimage), so neither does the worker: the same steps on both sides.
  const toolchain = await benchToolchain(run, taskQueue, rssWrapper, 'prepare = false');
  const rssLog = path.join(dir, `tools-${repeat}.log`);
  await writeFile(rssLog, '');
  const temporal = await startTemporal(path.join(run, 'temporal'));
  let worker: Proc | undefined;
  const perImage: WorkerRun['perImage'] = [];
  let ms = 0;
  let workerRssMiB = 0;
  try {
    worker = await startSnf(
      ['worker', '--conf', toolchain.conf],
      toolchain.env(temporal.address, { SNF_BENCH_RSS_LOG: rssLog }),
      /worker started/,
    );
    const done = await registerAtOnce(
      temporal.address,
      taskQueue,
      images.map((img) => ({ ...img, url: `${baseUrl}/${img.name}` })),
      'pipeline',
    );
    ms = done.ms;
    perImage.push(...done.perImage);
    workerRssMiB = await peakRssMiB(worker.proc.pid);
  } finally {
    await stopAll([() => worker?.stop(), () => temporal.stop()]);
    await rm(run, { recursive: true, force: true });
  }
  const tools = Object.fromEntries(await readToolRss(rssLog));
  return { ms, perImage, workerRssMiB, tools };
}

export async function benchPipeline(): Promise<BenchResult> {
  const dir = path.join(BENCH_TMP, 'pipeline');
  const images = await makeQcowImages(path.join(dir, 'images'), 'image', COUNT, SIZE_GIB);
  const nginx = await serveWithNginx(path.join(dir, 'images'));
  const baseUrl = nginx.url('').replace(/\/$/, '');
  // The script's fake upload uses the same fake kamaki and cloud as the worker's.
  const scriptTools = await benchToolchain(
    path.join(dir, 'script-tools'),
    'unused',
    (_n, real) => `#!/bin/bash\nexec "${real}" "$@"\n`,
  );
  const scriptEnv = scriptTools.env('unused');
  const scripts: ScriptRun[] = [];
  const workers: WorkerRun[] = [];
  const load: number[][] = [os.loadavg()];
  try {
    // Interleaved: script, worker, script, worker…
    for (let i = 0; i < PIPELINE_REPEATS; i++) {
      const script = await runScript(dir, baseUrl, images, scriptEnv);
      scripts.push(script);
      log(`pipeline #${i + 1}: script ${round(script.ms / 1000, 1)} s (load ${os.loadavg()[0].toFixed(1)})`);
      const worker = await runWorker(dir, baseUrl, images, i);
      workers.push(worker);
      log(`pipeline #${i + 1}: worker ${round(worker.ms / 1000, 1)} s (load ${os.loadavg()[0].toFixed(1)})`);
      load.push(os.loadavg());
    }
  } finally {
    await nginx.close();
    await rm(dir, { recursive: true, force: true });
  }
  const scriptS = median(scripts.map((s) => s.ms)) / 1000;
  const workerS = median(workers.map((w) => w.ms)) / 1000;
  const ratio = workerS / scriptS;
  const failed = workers.flatMap((w) => w.perImage).filter((p) => p.outcome !== 'registered').length;
  const totalGiB = images.reduce((a, i) => a + i.size, 0) / GiB;
  return {
    name: 'pipeline',
    title: `The whole pipeline against a plain script: ${COUNT} qcow2 images of ${SIZE_GIB} GiB`,
    method:
      `${COUNT} qcow2 images made by qemu-img from ${SIZE_GIB} GiB of random data each (${round(totalGiB, 1)} GiB of qcow2 in all), served by nginx on 127.0.0.1 ` +
      '(sendfile, page cache). Worker: one `snf-vmcatcher worker` with the default configuration (two file-step slots) and synnefo.prepare = false (the script does not prepare either) on a Temporal dev server started by the benchmark; ' +
      'the 4 image revision workflows are started at once and the time runs until the last one has registered its image: download with sha512 and size, ' +
      'inspection, `qemu-img convert` to raw (the real qemu-img), the fake kamaki upload and registration (test/fakes/). ' +
      'Script: the same 4 images one after another by a bash script (`curl -o`, `sha512sum -c`, `qemu-img convert -f qcow2 -O raw`, the fake `kamaki file upload`), ' +
      `timed as a whole process. ${PIPELINE_REPEATS} interleaved repeat(s) (script, then worker). Peak RSS: the worker's VmHWM; the script's is GNU time's (its largest process).`,
    rows: [
      ...workers.flatMap((w, i) =>
        w.perImage
          .sort((a, b) => a.s - b.s)
          .map((p) => ({ figure: `worker #${i + 1}: ${p.image} done after`, value: `${p.s} s (${p.outcome})` })),
      ),
      ...scripts.map((s, i) => ({
        figure: `script #${i + 1}: all ${COUNT} images`,
        value: `${round(s.ms / 1000, 1)} s`,
      })),
      ...workers.map((w, i) => ({
        figure: `worker #${i + 1}: all ${COUNT} images`,
        value: `${round(w.ms / 1000, 1)} s`,
      })),
      { figure: 'ratio worker / script (medians)', value: `${round(ratio, 2)} ×` },
      ...workers.map((w, i) => ({ figure: `worker #${i + 1}: peak RSS (Node)`, value: `${w.workerRssMiB} MiB` })),
      ...workers.flatMap((w, i) =>
        Object.entries(w.tools).map(([name, t]) => ({
          figure: `worker #${i + 1}: ${name} (${t.calls} calls)`,
          value: `${round(t.seconds, 0)} s in all, peak RSS ${t.maxMiB} MiB`,
        })),
      ),
      ...scripts.map((s, i) => ({
        figure: `script #${i + 1}: peak RSS of its largest process`,
        value: `${s.maxRssMiB} MiB`,
      })),
    ],
    targets: [
      {
        target: 'worker ≤ 0.8 × the serial script',
        measured: `${round(ratio, 2)} × (${round(workerS, 1)} s against ${round(scriptS, 1)} s)`,
        met: ratio <= 0.8,
      },
      { target: 'no failed workflow', measured: `${failed} failed of ${COUNT * PIPELINE_REPEATS}`, met: failed === 0 },
    ],
    notes: [
      `Load average (1, 5, 15 min) at the start and after each repeat: ${load.map((l) => l.map((x) => x.toFixed(2)).join('/')).join('; ')} (2 cores; other work on the machine shares them).`,
    ],
    raw: { scripts, workers, load },
  };
}
