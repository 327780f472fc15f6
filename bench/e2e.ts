/**
 * End-to-end overhead per image: small qcow2 images served over local HTTP go one after another
 * through the whole registerImage workflow (a real worker process, the Temporal dev server, the
 * fake kamaki and snf-mkimage, the real qemu-img). Every external tool runs through a wrapper
 * that records how long it took; overhead = the workflow's wall time − the tools' time.
 */
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { parseConfig } from '../core/config.js';
import { ImageEventSchema } from '../core/event.js';
import { startWorkflowForEvent } from '../core/starter.js';
import { registrationSite } from '../clouds/index.js';
import { connectTemporal } from '../core/temporal-client.js';
import {
  BENCH_TMP,
  REPEATS,
  benchToolchain,
  log,
  median,
  round,
  serveFolder,
  sha512File,
  stopAll,
  timed,
  type BenchResult,
} from './lib.js';
import { startSnf, startTemporal, type Proc } from './services.js';
import { writeLinuxMbr } from '../test/support/disk-images.js';

const IMAGES = Number(process.env.SNF_VMCATCHER_BENCH_IMAGES ?? 20);

/** A wrapper that runs `real` and appends "<name> <start ns> <end ns>" to $SNF_BENCH_TOOL_LOG. */
function timingWrapper(name: string, real: string): string {
  return `#!/bin/bash
s=$(date +%s%N)
"${real}" "$@"
rc=$?
e=$(date +%s%N)
echo "${name} $s $e" >> "$SNF_BENCH_TOOL_LOG"
exit $rc
`;
}

export async function benchE2e(): Promise<BenchResult> {
  const dir = path.join(BENCH_TMP, 'e2e');
  const images = path.join(dir, 'images');
  await mkdir(images, { recursive: true });
  const taskQueue = 'bench-e2e';
  const toolchain = await benchToolchain(dir, taskQueue, timingWrapper);
  const toolLog = path.join(dir, 'tools.log');
  await writeFile(toolLog, '');

  // Small qcow2 images, each with its own random content (so each is a distinct image).
  const files: Array<{ name: string; sha512: string; size: number }> = [];
  for (let i = 0; i < IMAGES; i++) {
    const raw = path.join(dir, `disk-${i}.raw`);
    const name = `image-${i}.qcow2`;
    await execa('qemu-img', ['create', '-q', '-f', 'raw', raw, '32M']);
    await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=2', 'seek=1', 'conv=notrunc', 'status=none']);
    await writeLinuxMbr(raw, 32 * 1024 * 1024);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path.join(images, name)]);
    await rm(raw);
    const size = Number((await execa('stat', ['-c', '%s', path.join(images, name)])).stdout);
    files.push({ name, sha512: await sha512File(path.join(images, name)), size });
  }

  const server = await serveFolder(images);
  const temporal = await startTemporal(path.join(dir, 'temporal'));
  let worker: Proc | undefined;
  const perImage: Array<{ wallMs: number; toolMs: number; overheadMs: number; tools: Record<string, number> }> = [];
  const perRepeatTotal: number[] = [];
  try {
    const env = toolchain.env(temporal.address, { SNF_BENCH_TOOL_LOG: toolLog });
    worker = await startSnf(['worker', '--conf', toolchain.conf], env, /worker started/);
    const config = parseConfig({ temporal: { address: temporal.address, taskQueue } }, 'bench');
    const { client, connection } = await connectTemporal(config.temporal);
    try {
      // One warm-up registration (worker caches, first workflow task), not counted.
      for (let repeat = -1; repeat < REPEATS; repeat++) {
        const batch = repeat < 0 ? files.slice(0, 1) : files;
        const total = await timed(async () => {
          for (const file of batch) {
            const event = ImageEventSchema.parse({
              origin: 'command',
              imageListId: `bench-e2e-${repeat < 0 ? 'warmup' : repeat}`,
              imageId: file.name,
              title: file.name,
              uri: server.url(file.name),
              size: file.size,
              checksumSha512: file.sha512,
            });
            const before = (await readFile(toolLog, 'utf8')).length;
            const run = await timed(async () => {
              const started = await startWorkflowForEvent(
                client,
                config,
                event,
                { cloud: 'bench' },
                registrationSite(config),
              );
              if (started.outcome !== 'delivered') throw new Error(`workflow for ${file.name}: ${started.outcome}`);
              return started.handle!.result();
            });
            const lines = (await readFile(toolLog, 'utf8')).slice(before).trim().split('\n').filter(Boolean);
            const tools: Record<string, number> = {};
            for (const line of lines) {
              const [name, s, e] = line.split(' ');
              tools[name] = (tools[name] ?? 0) + Number(BigInt(e) - BigInt(s)) / 1e6;
            }
            const toolMs = Object.values(tools).reduce((a, b) => a + b, 0);
            if (repeat >= 0) perImage.push({ wallMs: run.ms, toolMs, overheadMs: run.ms - toolMs, tools });
          }
        });
        if (repeat >= 0) {
          perRepeatTotal.push(total.ms);
          const these = perImage.slice(-batch.length);
          log(
            `e2e #${repeat + 1}: ${batch.length} images in ${round(total.ms, 0)} ms; median per image ${round(median(these.map((p) => p.wallMs)), 0)} ms wall, ${round(median(these.map((p) => p.toolMs)), 0)} ms tools, ${round(median(these.map((p) => p.overheadMs)), 0)} ms overhead`,
          );
        }
      }
    } finally {
      await connection.close();
    }
  } finally {
    await stopAll([() => worker?.stop(), () => temporal.stop(), () => server.close()]);
    await appendFile(toolLog, '');
    await rm(dir, { recursive: true, force: true });
  }
  const med = (key: 'wallMs' | 'toolMs' | 'overheadMs') => median(perImage.map((p) => p[key]));
  const toolNames = [...new Set(perImage.flatMap((p) => Object.keys(p.tools)))].sort();
  const overhead = med('overheadMs');
  const p90 = [...perImage.map((p) => p.overheadMs)].sort((a, b) => a - b)[Math.floor(perImage.length * 0.9)];
  return {
    name: 'e2e',
    title: `End-to-end overhead per image (${IMAGES} small images, fake kamaki and snf-mkimage)`,
    method:
      `${IMAGES} qcow2 images (32 MiB virtual, 2 MiB of random data, each different) served over local HTTP, registered one after another with registerImage ` +
      '(started with the Temporal client, as the bridge and register-now do) by a real `snf-vmcatcher worker` on a Temporal dev server started by the benchmark. ' +
      "kamaki, snf-mkimage (the fakes from test/fakes/) and qemu-img run through wrappers that log each invocation's duration; " +
      `a workflow's overhead is its wall time (start → result) minus the sum of those durations. ${REPEATS} repeats of all ${IMAGES} images (new image list id each time), after one warm-up registration.`,
    rows: [
      { figure: 'wall time per image', 'median ms': round(med('wallMs'), 0) },
      { figure: 'tool time per image (kamaki + snf-mkimage + qemu-img)', 'median ms': round(med('toolMs'), 0) },
      ...toolNames.map((t) => ({
        figure: `  of which ${t}`,
        'median ms': round(median(perImage.map((p) => p.tools[t] ?? 0)), 0),
      })),
      { figure: 'overhead per image (wall − tools)', 'median ms': round(overhead, 0) },
      { figure: 'overhead per image, 90th percentile', 'median ms': round(p90, 0) },
      { figure: `all ${IMAGES} images, one after another`, 'median ms': round(median(perRepeatTotal), 0) },
    ],
    targets: [
      {
        target: 'orchestration overhead ≤ 1 s per image',
        measured: `${round(overhead / 1000, 3)} s (median), ${round(p90 / 1000, 3)} s (90th percentile)`,
        met: overhead <= 1000,
      },
    ],
    notes: [
      'The overhead includes everything that is not a tool: Temporal round trips and activity scheduling, the download from the local server with sha512 and size checks, format detection, heartbeats, the work-folder clean-up.',
      'The fakes are Node scripts, so their "tool time" is mostly Node start-up (real kamaki and snf-mkimage are Python and take far longer: uploads, sysprep).',
    ],
    raw: { perImage, perRepeatTotal },
  };
}
