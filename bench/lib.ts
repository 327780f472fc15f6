/** Shared helpers of the benchmarks: timing, medians, a static file server, big temporary files. */
import { createReadStream, readdirSync, readFileSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { access, chmod, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { writeLinuxMbr } from '../test/support/disk-images.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Big files go on /work (the repository's disk), not /tmp, which may be small. */
export const BENCH_TMP = process.env.SNF_VMCATCHER_BENCH_TMP ?? path.join(ROOT, 'tmp', 'bench');
export const REPEATS = Math.max(3, Number(process.env.SNF_VMCATCHER_BENCH_REPEATS ?? 3));
export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/**
 * `SNF_VMCATCHER_BENCH_REALTIME=1`: the download and pipeline contenders (ours, curl, sha512sum, the
 * script, nginx, the worker) run under `chrt -f 10` (SCHED_FIFO), so on a machine shared with other
 * work they get the cores as if it were idle (the kernel still keeps 5 % for everything else).
 * Needs root (or CAP_SYS_NICE). Results say which way they were measured.
 */
export const REALTIME = process.env.SNF_VMCATCHER_BENCH_REALTIME === '1';

/** `[command, args]`, under `chrt -f 10` when REALTIME. */
export function prioritized(command: string, args: string[]): [string, string[]] {
  return REALTIME ? ['chrt', ['-f', '10', command, ...args]] : [command, args];
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export const round = (value: number, digits = 3): number => Number(value.toFixed(digits));

export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = process.hrtime.bigint();
  const value = await fn();
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, value };
}

export function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/** A file of `bytes` random bytes (incompressible, like a real image), made once and reused. */
export async function randomFile(file: string, bytes: number): Promise<string> {
  const existing = await stat(file).catch(() => undefined);
  if (existing?.size === bytes) return file;
  await mkdir(path.dirname(file), { recursive: true });
  log(`writing ${bytes / MiB} MiB of random data to ${file}`);
  const fh = await open(file, 'w');
  try {
    const chunk = Buffer.alloc(16 * MiB);
    for (let at = 0; at < bytes; at += chunk.length) {
      const n = Math.min(chunk.length, bytes - at);
      randomFillSync(chunk, 0, n);
      await fh.write(chunk, 0, n, at);
    }
  } finally {
    await fh.close();
  }
  return file;
}

export async function sha512File(file: string): Promise<string> {
  return (await execa('sha512sum', [file])).stdout.split(/\s/)[0];
}

export async function freeBytes(folder: string): Promise<number> {
  const { stdout } = await execa('df', ['--output=avail', '-B1', folder]);
  return Number(stdout.trim().split('\n').pop());
}

export async function cleanTmp(): Promise<void> {
  await rm(BENCH_TMP, { recursive: true, force: true });
}

export interface FileServer {
  url(name: string): string;
  close(): Promise<void>;
}

/** Serves the files of one folder over HTTP on 127.0.0.1, with Content-Length, nothing else. */
export async function serveFolder(folder: string): Promise<FileServer> {
  const server = http.createServer((req, res) => {
    const name = path.basename(new URL(req.url ?? '/', 'http://x').pathname);
    const file = path.join(folder, name);
    stat(file).then(
      (s) => {
        res.writeHead(200, { 'content-length': s.size, 'content-type': 'application/octet-stream' });
        createReadStream(file, { highWaterMark: 1024 * 1024 }).pipe(res);
      },
      () => {
        res.writeHead(404).end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (name) => `http://127.0.0.1:${port}/${name}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** nginx on this machine (Debian's nginx-light), installed the first time a benchmark needs it. */
async function nginxBinary(): Promise<string> {
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx']) {
    if (
      await access(candidate).then(
        () => true,
        () => false,
      )
    )
      return candidate;
  }
  const onPath = (await execa('bash', ['-c', 'command -v nginx'], { reject: false })).stdout.trim();
  if (onPath) return onPath;
  log('installing nginx-light from Debian (the reference HTTP server of the download and pipeline benchmarks)');
  const root = process.getuid?.() === 0;
  const apt = (args: string[]) =>
    execa(root ? 'apt-get' : 'sudo', root ? args : ['-n', 'apt-get', ...args], {
      env: { DEBIAN_FRONTEND: 'noninteractive' },
      stdout: 'ignore',
    });
  await apt(['install', '-y', '--no-install-recommends', 'nginx-light']).catch(async () => {
    await apt(['update']);
    await apt(['install', '-y', '--no-install-recommends', 'nginx-light']);
  });
  return '/usr/sbin/nginx';
}

async function unusedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Serves the files of one folder with nginx on 127.0.0.1 (its own configuration in a temporary
 * folder, `sendfile on`, in the foreground, one worker process), so the server costs almost
 * nothing: the files come from the page cache and the kernel copies them to the socket. Stopped
 * by close().
 */
export async function serveWithNginx(
  folder: string,
): Promise<
  FileServer & { pid(): number | undefined; served(): Promise<Array<{ uri: string; status: number; bytes: number }>> }
> {
  const nginx = await nginxBinary();
  await mkdir(BENCH_TMP, { recursive: true });
  const dir = await mkdtemp(path.join(BENCH_TMP, 'nginx-'));
  const port = await unusedPort();
  const conf = path.join(dir, 'nginx.conf');
  await writeFile(
    conf,
    `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 64; }
http {
  log_format served '$uri $status $body_bytes_sent';
  access_log ${dir}/access.log served;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/tmp;
  proxy_temp_path ${dir}/tmp;
  fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp;
  scgi_temp_path ${dir}/tmp;
  server {
    listen 127.0.0.1:${port};
    root ${path.resolve(folder)};
  }
}
`,
  );
  const proc = execa(...prioritized(nginx, ['-c', conf, '-p', dir, '-e', path.join(dir, 'error.log')]), {
    reject: false,
  });
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) break;
    if (proc.exitCode !== null || i > 100) {
      const errors = await readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
      proc.kill('SIGKILL');
      throw new Error(`nginx did not start on 127.0.0.1:${port}: ${errors.trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  log(`nginx serving ${folder} on 127.0.0.1:${port}`);
  return {
    url: (name) => `http://127.0.0.1:${port}/${name}`,
    pid: () => proc.pid,
    /** Every request answered so far: its path, status and body bytes sent (nginx's access log). */
    served: async () =>
      (await readFile(path.join(dir, 'access.log'), 'utf8').catch(() => ''))
        .split('\n')
        .filter(Boolean)
        .map((line) => {
          const [uri = '', status = '0', bytes = '0'] = line.split(' ');
          return { uri, status: Number(status), bytes: Number(bytes) };
        }),
    close: async () => {
      proc.kill('SIGQUIT');
      await proc;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A result of one benchmark: figures, targets met or not, and notes, as written to results.md. */
export interface BenchResult {
  name: string;
  title: string;
  /** What was measured, how often, against what. */
  method: string;
  /** Rows of the results table. */
  rows: Array<Record<string, string | number>>;
  targets: Array<{ target: string; measured: string; met: boolean; note?: string }>;
  notes?: string[];
  /** Raw figures (every repeat), for results.json. */
  raw: Record<string, unknown>;
  skipped?: string;
  /** Parts measured separately (each its own table), after `rows`. */
  sections?: Array<{ title: string; method: string; rows: BenchResult['rows']; notes?: string[] }>;
}

/**
 * A folder of wrappers for the programs the worker runs (the fake kamaki and snf-mkimage, the real
 * qemu-img), each written by `wrapper(name, realPath)` (e.g. one that times or measures the call),
 * a ~/.kamakirc naming the cloud `bench`, and an application.conf pointing the worker at them.
 */
export async function benchToolchain(
  dir: string,
  taskQueue: string,
  wrapper: (name: string, real: string) => string,
  /** More keys of the `synnefo` block (e.g. `prepare = false`). */
  synnefoExtra = '',
) {
  const wrappers = path.join(dir, 'bin');
  await mkdir(wrappers, { recursive: true });
  const qemuImg = (await execa('bash', ['-c', 'command -v qemu-img'])).stdout.trim();
  for (const [name, real] of [
    ['kamaki', path.join(ROOT, 'test/fakes/kamaki')],
    ['snf-mkimage', path.join(ROOT, 'test/fakes/snf-mkimage')],
    ['qemu-img', qemuImg],
  ]) {
    await writeFile(path.join(wrappers, name), wrapper(name, real));
    await chmod(path.join(wrappers, name), 0o755);
  }
  const kamakirc = path.join(dir, 'kamakirc');
  await writeFile(
    kamakirc,
    '[global]\ndefault_cloud = bench\n\n[cloud "bench"]\nurl = https://accounts.example.org/identity/v2.0\ntoken = bench-token-not-secret\n',
  );
  const conf = path.join(dir, 'application.conf');
  await writeFile(
    conf,
    `temporal { taskQueue = "${taskQueue}" }
worker { workingFolder = "${dir}/work" }
synnefo {
  kamaki = "${wrappers}/kamaki"
  snfMkimage = "${wrappers}/snf-mkimage"
  sudo = []
  cloud = "bench"
  ${synnefoExtra}
}
`,
  );
  /** The worker's environment: the server, the fakes' state, the wrappers first on PATH. */
  const env = (temporalAddress: string, extra: Record<string, string> = {}) => ({
    TEMPORAL_ADDRESS: temporalAddress,
    FAKE_SYNNEFO_STATE: path.join(dir, 'synnefo-state.json'),
    FAKE_KAMAKIRC: kamakirc,
    PATH: `${wrappers}:${process.env.PATH}`,
    ...extra,
  });
  return { conf, env };
}

/** Stops what a benchmark started, in order, each even if an earlier one failed; the first failure is thrown at the end. */
export async function stopAll(stops: Array<() => Promise<unknown> | undefined>): Promise<void> {
  const failures: unknown[] = [];
  for (const stop of stops) await Promise.resolve(stop()).catch((err: unknown) => failures.push(err));
  if (failures.length > 0) throw failures[0];
}

/** A tool wrapper (benchToolchain) running the real program under GNU time, logging "<name> <max RSS KiB> <seconds>" per call to $SNF_BENCH_RSS_LOG. */
export function rssWrapper(name: string, real: string): string {
  return `#!/bin/bash
exec /usr/bin/time -a -o "$SNF_BENCH_RSS_LOG" -f "${name} %M %e" "${real}" "$@"
`;
}

/** What rssWrapper logged, per tool: calls, seconds in all, the largest peak RSS. */
export async function readToolRss(
  rssLog: string,
): Promise<Map<string, { maxMiB: number; calls: number; seconds: number }>> {
  const toolRss = new Map<string, { maxMiB: number; calls: number; seconds: number }>();
  for (const line of (await readFile(rssLog, 'utf8').catch(() => '')).split('\n')) {
    const [name, kib, seconds] = line.trim().split(' ');
    if (!name || !kib || Number.isNaN(Number(kib))) continue;
    const entry = toolRss.get(name) ?? { maxMiB: 0, calls: 0, seconds: 0 };
    entry.maxMiB = Math.max(entry.maxMiB, round(Number(kib) / 1024, 0));
    entry.calls += 1;
    entry.seconds += Number(seconds);
    toolRss.set(name, entry);
  }
  return toolRss;
}

/** Peak resident set (VmHWM) of a running process, in MiB (0 when it is gone). */
export async function peakRssMiB(pid: number | undefined): Promise<number> {
  if (!pid) return 0;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return round(Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? 0) / 1024, 0);
}

const CLOCK_TICKS = 100;

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces): utime is the 14th field overall.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/**
 * CPU seconds used so far by every process whose command name is `comm` (e.g. `postgres`,
 * `beam.smp`), including their exited children: for a server made of several processes.
 */
export function cpuSecondsOfCommand(comm: string): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== comm) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS;
    } catch {
      // The process ended meanwhile.
    }
  }
  return total;
}

/** A qcow2 image a benchmark serves: its file name, size and sha512. */
export interface QcowImage {
  name: string;
  size: number;
  sha512: string;
}

/**
 * `count` qcow2 images of `sizeGiB` of random data with an MBR (what a real image starts with),
 * named `<prefix>-<n>.qcow2` in `folder`; made by qemu-img once, kept while the folder is.
 */
export async function makeQcowImages(
  folder: string,
  prefix: string,
  count: number,
  sizeGiB: number,
): Promise<QcowImage[]> {
  await mkdir(folder, { recursive: true });
  const out: QcowImage[] = [];
  for (let i = 0; i < count; i++) {
    const name = `${prefix}-${i}.qcow2`;
    const file = path.join(folder, name);
    if (!(await stat(file).catch(() => undefined))) {
      log(`writing ${name} (${sizeGiB} GiB of random data, converted by qemu-img)`);
      const raw = path.join(folder, `disk-${i}.raw`);
      await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${sizeGiB * 1024}`, 'status=none']);
      await writeLinuxMbr(raw, sizeGiB * GiB);
      await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, file]);
      await rm(raw);
    }
    out.push({ name, size: (await stat(file)).size, sha512: await sha512File(file) });
  }
  return out;
}
