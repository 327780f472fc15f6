/**
 * Many clouds from one deployment: the same qcow2 images registered by one `snf-vmcatcher worker`
 * into one cloud, then into three (three Synnefo clouds of the fake, three accounts, all taking raw,
 * `prepare = false`), sent at once as a subscription or the hook would. Wall time of each, and the
 * bytes nginx served: with three clouds each revision is downloaded and converted once per host and
 * uploaded three times.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { registrationSite } from '../clouds/index.js';
import { loadConfig } from '../core/config.js';
import { ImageEventSchema } from '../core/event.js';
import { startWorkflowForEvent } from '../core/starter.js';
import { connectTemporal } from '../core/temporal-client.js';
import type { ImageRevisionResult } from '../core/workflow-contract.js';
import {
  BENCH_TMP,
  GiB,
  type QcowImage,
  benchToolchain,
  cpuSeconds,
  log,
  makeQcowImages,
  median,
  peakRssMiB,
  round,
  serveWithNginx,
  stopAll,
  timed,
  type BenchResult,
} from './lib.js';
import { startSnf, startTemporal, type Proc } from './services.js';

const SIZE_GIB = Number(process.env.SNF_VMCATCHER_BENCH_CLOUDS_GIB ?? 1);
const COUNT = Number(process.env.SNF_VMCATCHER_BENCH_CLOUDS_IMAGES ?? 4);
const REPEATS = Math.max(1, Number(process.env.SNF_VMCATCHER_BENCH_CLOUDS_REPEATS ?? 1));
const CLOUDS = ['c1', 'c2', 'c3'];

interface Run {
  clouds: number;
  ms: number;
  registrations: number;
  failed: number;
  bytesServed: number;
  workerRssMiB: number;
  /** CPU seconds (user + system) of the worker process, and of each program it ran (calls, seconds). */
  workerCpuS: number;
  tools: Record<string, { calls: number; cpuS: number }>;
}

/**
 * A tool wrapper logging "<name> <user s> <system s>" per call to $SNF_BENCH_CPU_LOG; qemu-img's
 * name carries its subcommand (info, convert), whose costs differ a thousandfold.
 */
const cpuWrapper = (name: string, real: string) =>
  `#!/bin/bash\nexec /usr/bin/time -a -o "$SNF_BENCH_CPU_LOG" -f "${name}${name === 'qemu-img' ? '-$1' : ''} %U %S" "${real}" "$@"\n`;

async function readToolCpu(file: string): Promise<Run['tools']> {
  const tools: Run['tools'] = {};
  for (const line of (await readFile(file, 'utf8').catch(() => '')).split('\n')) {
    const [name, user, system] = line.trim().split(' ');
    if (!name || Number.isNaN(Number(user)) || Number.isNaN(Number(system))) continue;
    const t = (tools[name] ??= { calls: 0, cpuS: 0 });
    t.calls += 1;
    t.cpuS = round(t.cpuS + Number(user) + Number(system), 1);
  }
  return tools;
}

/** One worker, `clouds` clouds, every image sent at once (one event each, fanned out to every cloud). */
async function runOnce(
  dir: string,
  images: QcowImage[],
  url: (name: string) => string,
  served: () => Promise<Array<{ bytes: number }>>,
  clouds: string[],
  repeat: number,
): Promise<Run> {
  const run = path.join(dir, `run-${clouds.length}-${repeat}`);
  await rm(run, { recursive: true, force: true });
  const taskQueue = `bench-clouds-${clouds.length}`;
  const toolchain = await benchToolchain(run, taskQueue, cpuWrapper, 'prepare = false');
  const cpuLog = path.join(run, 'tools-cpu.log');
  // One kamaki cloud (and account: its own token) per cloud of the deployment.
  const kamakirc = path.join(run, 'kamakirc-clouds');
  await writeFile(
    kamakirc,
    `[global]\ndefault_cloud = ${clouds[0]}\n\n` +
      clouds
        .map((c) => `[cloud "${c}"]\nurl = https://accounts.example.org/identity/v2.0\ntoken = bench-${c}-token\n`)
        .join('\n'),
  );
  const conf = path.join(run, 'clouds.conf');
  await writeFile(
    conf,
    `${await readFile(toolchain.conf, 'utf8')}
clouds {
${clouds.map((c) => `  ${c} { type = synnefo, kamakiCloud = ${c} }`).join('\n')}
}
`,
  );
  const temporal = await startTemporal(path.join(run, 'temporal'));
  let worker: Proc | undefined;
  const before = (await served()).reduce((a, r) => a + r.bytes, 0);
  let ms = 0;
  let registrations = 0;
  let failed = 0;
  let workerRssMiB = 0;
  let workerCpuS = 0;
  let tools: Run['tools'] = {};
  try {
    worker = await startSnf(
      ['worker', '--conf', conf],
      { ...toolchain.env(temporal.address, { SNF_BENCH_CPU_LOG: cpuLog }), FAKE_KAMAKIRC: kamakirc },
      /worker started/,
    );
    const { config } = await loadConfig({ file: conf, env: { ...process.env, TEMPORAL_ADDRESS: temporal.address } });
    const { client, connection } = await connectTemporal(config.temporal);
    const cpuBefore = cpuSeconds(worker.proc.pid!);
    try {
      const listId = `bench-clouds-${clouds.length}-${Date.now()}`;
      ({ ms } = await timed(() =>
        Promise.all(
          images.map(async (img) => {
            const event = ImageEventSchema.parse({
              origin: 'command',
              imageListId: listId,
              imageId: img.name,
              title: img.name,
              uri: url(img.name),
              size: img.size,
              checksumSha512: img.sha512,
            });
            const started = await startWorkflowForEvent(client, config, event, {}, registrationSite(config));
            await Promise.all(
              (started.deliveries ?? [started]).map(async (delivery) => {
                registrations++;
                const ok = await delivery.handle!.result().then(
                  (r) => Boolean((r as ImageRevisionResult).register?.imageId),
                  () => false,
                );
                if (!ok) failed++;
              }),
            );
          }),
        ),
      ));
    } finally {
      await connection.close();
    }
    workerRssMiB = await peakRssMiB(worker.proc.pid);
    workerCpuS = round(cpuSeconds(worker.proc.pid!) - cpuBefore, 1);
    tools = await readToolCpu(cpuLog);
  } finally {
    await stopAll([() => worker?.stop(), () => temporal.stop()]);
    await rm(run, { recursive: true, force: true });
  }
  const bytesServed = (await served()).reduce((a, r) => a + r.bytes, 0) - before;
  return { clouds: clouds.length, ms, registrations, failed, bytesServed, workerRssMiB, workerCpuS, tools };
}

export async function benchClouds(): Promise<BenchResult> {
  const dir = path.join(BENCH_TMP, 'clouds');
  const images = await makeQcowImages(path.join(dir, 'images'), 'cloud-image', COUNT, SIZE_GIB);
  const nginx = await serveWithNginx(path.join(dir, 'images'));
  const one: Run[] = [];
  const three: Run[] = [];
  const load: number[][] = [os.loadavg()];
  try {
    // Interleaved: one cloud, three clouds, one, three…
    for (let i = 0; i < REPEATS; i++) {
      const a = await runOnce(dir, images, nginx.url, nginx.served, CLOUDS.slice(0, 1), i);
      one.push(a);
      log(`clouds #${i + 1}: 1 cloud ${round(a.ms / 1000, 1)} s, ${round(a.bytesServed / GiB, 2)} GiB served`);
      const b = await runOnce(dir, images, nginx.url, nginx.served, CLOUDS, i);
      three.push(b);
      log(`clouds #${i + 1}: 3 clouds ${round(b.ms / 1000, 1)} s, ${round(b.bytesServed / GiB, 2)} GiB served`);
      load.push(os.loadavg());
    }
  } finally {
    await nginx.close();
    await rm(dir, { recursive: true, force: true });
  }
  const oneS = median(one.map((r) => r.ms)) / 1000;
  const threeS = median(three.map((r) => r.ms)) / 1000;
  const ratio = threeS / oneS;
  const imageBytes = images.reduce((a, i) => a + i.size, 0);
  const downloads = Math.max(...three.map((r) => r.bytesServed)) / imageBytes;
  const failed = [...one, ...three].reduce((a, r) => a + r.failed, 0);
  const row = (r: Run, i: number) => ({
    figure: `#${i + 1}: ${r.clouds} cloud${r.clouds > 1 ? 's' : ''} (${r.registrations} registrations)`,
    value: `${round(r.ms / 1000, 1)} s, ${round(r.bytesServed / GiB, 2)} GiB served, worker peak RSS ${r.workerRssMiB} MiB`,
  });
  // Where the CPU went: the machine has 2 cores, so CPU seconds / 2 is the least wall time the work can take.
  const cpuRow = (r: Run, i: number) => ({
    figure: `#${i + 1}: ${r.clouds} cloud${r.clouds > 1 ? 's' : ''}, CPU seconds`,
    value: [
      `worker ${r.workerCpuS} s`,
      ...Object.entries(r.tools).map(([name, t]) => `${name} ${t.cpuS} s (${t.calls} calls)`),
    ].join(', '),
  });
  return {
    name: 'clouds',
    title: `Many clouds: ${COUNT} qcow2 images of ${SIZE_GIB} GiB into 1 cloud and into 3`,
    method:
      `${COUNT} qcow2 images made by qemu-img from ${SIZE_GIB} GiB of random data each (${round(imageBytes / GiB, 2)} GiB of qcow2), served by nginx on 127.0.0.1 (sendfile; its access log counts the bytes sent). ` +
      'One `snf-vmcatcher worker` (default configuration: two file-step slots) on a Temporal dev server started by the benchmark, `clouds` of Synnefo clouds of the fake (each its own kamaki cloud and account, `prepare = false`): one cloud, then three. ' +
      'Every image is one event sent at once with no cloud named, so it goes to every cloud (defaultClouds); the time runs until every registration has ended. ' +
      `${REPEATS} interleaved repeat(s).`,
    rows: [
      ...one.map(row),
      ...three.map(row),
      ...one.map(cpuRow),
      ...three.map(cpuRow),
      { figure: 'ratio 3 clouds / 1 cloud (medians)', value: `${round(ratio, 2)} ×` },
      { figure: 'bytes served for 3 clouds / the images’ bytes', value: `${round(downloads, 2)} ×` },
    ],
    targets: [
      {
        target: '3 clouds ≤ 1.5 × one cloud’s time',
        measured: `${round(ratio, 2)} × (${round(threeS, 1)} s against ${round(oneS, 1)} s)`,
        met: ratio <= 1.5,
      },
      { target: 'downloads = 1 × (one per revision)', measured: `${round(downloads, 2)} ×`, met: downloads <= 1.001 },
      { target: 'no failed registration', measured: `${failed} failed`, met: failed === 0 },
    ],
    notes: [
      `Load average (1, 5, 15 min) at the start and after each repeat: ${load.map((l) => l.map((x) => x.toFixed(2)).join('/')).join('; ')} (2 cores; other work on the machine shares them).`,
      await pageReporting(),
    ],
    raw: { one, three, load },
  };
}

/**
 * The guest kernel's free page reporting, where the machine has it (a virtual machine giving freed
 * memory back to its host): with `min_free_ms` 0 a page freed is given back at once, and the next
 * process to use it pays for the host to back it again, as system time (docs/benchmarks.md).
 */
async function pageReporting(): Promise<string> {
  const dir = '/sys/module/page_reporting/parameters';
  const read = (name: string) => readFile(path.join(dir, name), 'utf8').then((s) => s.trim());
  try {
    const [order, minFreeMs] = await Promise.all([read('page_reporting_order'), read('min_free_ms').catch(() => '?')]);
    return `Free page reporting: on (page_reporting_order ${order}, min_free_ms ${minFreeMs}).`;
  } catch {
    return 'Free page reporting: not on this machine.';
  }
}
