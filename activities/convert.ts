import { createReadStream, createWriteStream } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execa } from 'execa';
import type { Config } from '../core/config.js';
import { ImageIntegrityError, InvalidInputError, OutOfSpaceError, ToolError } from '../core/errors.js';
import { convertedFormat } from '../core/workflow-contract.js';
import {
  byteLimit,
  checkMembers,
  chooseImageMember,
  extractTarMember,
  extractZipMember,
  listTarArchive,
  listZipArchive,
  type ArchiveMember,
} from './archive.js';
import { cancellationSignal } from '../runtime/context.js';
import {
  asOutOfSpace,
  diskPolicy,
  filesystemSpace,
  reserveOf,
  reserveSpace,
  usableCapacity,
  type DiskPolicy,
} from './disk.js';
import { keepHeartbeating, type StepProgress } from '../runtime/heartbeats.js';
import {
  ACCEPTED_FORMATS,
  DISK_FORMATS,
  WRAPPER_FORMATS,
  checkDiskImage,
  inspectFile,
  normaliseFormat,
  qemuImageSpec,
} from './inspect.js';
import { chooseOvfDisk } from './ovf.js';
import { guarded } from '../runtime/tool-runner.js';
import type { DiskFormat } from '../clouds/target.js';
import type { ActivityDeps } from '../runtime/deps.js';
import type { ConvertInput, RawImage } from './types.js';
import { convertOnce } from './verified-files.js';
import { safeFileName, withWorkDir, type WorkDirLease } from './workspace.js';

interface ConvertDeps extends ActivityDeps {
  /** How often a running step looks at the free space (default DISK_WATCH_MS; tests go faster). */
  diskWatchMs?: number;
}

/** Wrappers inside wrappers: `.tar.gz` is 2; more than this is not an image, it is a puzzle. */
const MAX_STEPS = 6;

/** How often a running step looks at the free space of the work folder. */
const DISK_WATCH_MS = 1000;

const COMPRESSED_SUFFIX: Record<string, RegExp> = {
  gz: /\.(gz|gzip)$/i,
  bz2: /\.(bz2|bzip2)$/i,
  xz: /\.xz$/i,
};

/** `image.vmdk.gz` → `image.vmdk`; `image.tgz` → `image.tar`; no suffix → `image.unpacked`. */
function decompressedName(name: string, format: string): string {
  if (/\.tgz$/i.test(name)) return name.replace(/\.tgz$/i, '.tar');
  if (/\.t(bz2?|xz)$/i.test(name)) return name.replace(/\.t(bz2?|xz)$/i, '.tar');
  const suffix = COMPRESSED_SUFFIX[format];
  return suffix && suffix.test(name) ? name.replace(suffix, '') : `${name}.unpacked`;
}

/** `image.qcow2` → `image.raw`; the raw result's name. */
function rawName(name: string): string {
  return `${name.replace(/\.(qcow2?|vmdk|vdi|vhdx?|vpc|qed|img|raw|bin|dd|parallels|dmg|cloop|bochs)$/i, '')}.raw`;
}

/** `42.17` from qemu-img -p's last `    (42.17/100%)`; undefined when the text has none. */
export function qemuProgressPercent(text: string): number | undefined {
  const all = [...text.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
  return all.length ? Number(all[all.length - 1][1]) : undefined;
}

/** What a step reports while it runs; the heartbeat timer sends the latest. */
type Report = (bytesDone?: number, bytesTotal?: number) => void;

interface StepContext {
  signal: AbortSignal;
  report: Report;
}

/** The security limits; unset ones default to what the working folder's filesystem can hold. */
interface ConvertLimits {
  maxUnpackedBytes: number;
  maxVirtualBytes: number;
  /** How a limit is named in errors. */
  unpackedName: string;
  virtualName: string;
}

async function convertLimits(config: Config, dir: string): Promise<ConvertLimits> {
  const { maxUnpackedBytes, maxVirtualBytes } = config.security;
  const capacity =
    maxUnpackedBytes === undefined || maxVirtualBytes === undefined ? await usableCapacity(dir, diskPolicy(config)) : 0;
  const byDefault = (key: string) => `${key}, by default what the working folder's filesystem can hold`;
  return {
    maxUnpackedBytes: maxUnpackedBytes ?? capacity,
    maxVirtualBytes: maxVirtualBytes ?? capacity,
    unpackedName: maxUnpackedBytes === undefined ? byDefault('security.maxUnpackedBytes') : 'security.maxUnpackedBytes',
    virtualName: maxVirtualBytes === undefined ? byDefault('security.maxVirtualBytes') : 'security.maxVirtualBytes',
  };
}

/**
 * Unwraps and converts an image to raw, one step at a time, re-detecting the format after
 * every step, holding the workflow's work folder (one attempt at a time: a replaced attempt
 * stops its child processes and leaves the files alone). Intermediate files are removed as
 * soon as the next step has succeeded; on any failure every file this call created is removed
 * and the error propagates (a half-converted image is never passed on as raw). The input file
 * itself is left alone, so a retry can start over.
 */
export async function convertToRaw(
  deps: ConvertDeps,
  input: ConvertInput,
  keep: readonly DiskFormat[] = ['raw'],
): Promise<RawImage> {
  return withWorkDir(deps.config, input.workflowId, (lease) =>
    // The same revision converted for the same formats by another cloud's registration: once (verified-files.ts).
    convertOnce(deps.config, deps.logger, input.path, keep, lease, () => convertInFolder(deps, input, lease, keep)),
  );
}

async function convertInFolder(
  deps: ConvertDeps,
  input: ConvertInput,
  lease: WorkDirLease,
  keep: readonly DiskFormat[],
): Promise<RawImage> {
  const workDir = lease.dir;
  if (path.resolve(input.workDir) !== workDir) {
    throw new InvalidInputError(
      `convert: work folder ${input.workDir} is not the one of workflow ${input.workflowId} (${workDir})`,
    );
  }
  const signal = AbortSignal.any([lease.signal, cancellationSignal()].filter((s): s is AbortSignal => s !== undefined));
  const conversion = new Conversion(deps, input, lease, signal, await convertLimits(deps.config, workDir), keep);
  const stopBeating = keepHeartbeating(() => conversion.progress);
  try {
    for (let n = 0; ; n++) {
      if (signal.aborted) throw signal.reason;
      if (n >= MAX_STEPS)
        throw new ImageIntegrityError(`${path.basename(input.path)} is wrapped more than ${MAX_STEPS} levels deep`);
      if (!WRAPPER_FORMATS.has(conversion.format)) return await conversion.toRaw();
      await conversion.unwrap();
    }
  } catch (err) {
    // A replaced attempt leaves every file alone: the attempt that took over owns the folder now.
    if (lease.owns()) for (const file of conversion.created) await rm(file, { force: true });
    throw err;
  } finally {
    stopBeating();
  }
}

/** One convertToRaw call: where the image is now and in what format, what was done, which files it made. */
class Conversion {
  current: string;
  format: string;
  progress: StepProgress = { step: 'convert' };
  readonly steps: string[] = [];
  /** Files this call wrote and still has: removed when it fails. */
  readonly created = new Set<string>();
  private readonly workDir: string;
  private readonly policy: DiskPolicy;
  private readonly toolTimeoutMs: number;

  constructor(
    private readonly deps: ConvertDeps,
    input: ConvertInput,
    private readonly lease: WorkDirLease,
    private readonly signal: AbortSignal,
    private readonly limits: ConvertLimits,
    private readonly keep: readonly DiskFormat[],
  ) {
    this.workDir = lease.dir;
    this.policy = diskPolicy(deps.config);
    this.toolTimeoutMs = deps.config.worker.toolTimeoutMs;
    this.current = path.resolve(input.path);
    this.format = normaliseFormat(input.format) ?? input.format;
  }

  /** Takes one wrapper off (gz, bz2, xz, or an archive's image member), then tells the format of what came out. */
  async unwrap(): Promise<void> {
    const { config, logger } = this.deps;
    const { limits, signal, toolTimeoutMs } = this;
    const format = this.format;
    const name = path.basename(this.current);
    if (format === 'gz' || format === 'bz2' || format === 'xz') {
      const out = this.outputPath(decompressedName(name, format));
      const estimate = await decompressedEstimate(format, this.current, signal);
      if (estimate > limits.maxUnpackedBytes) {
        throw new ImageIntegrityError(
          `${name} unpacks to ${estimate} bytes, more than the limit of ${limits.maxUnpackedBytes} (${limits.unpackedName})`,
        );
      }
      const from = this.current;
      await this.step(
        `${format === 'gz' ? 'gunzip' : format === 'bz2' ? 'bunzip2' : 'unxz'} ${name}`,
        out,
        estimate,
        (ctx) =>
          decompress(format, from, out, {
            maxBytes: limits.maxUnpackedBytes,
            limitName: limits.unpackedName,
            timeoutMs: toolTimeoutMs,
            estimate,
            ...ctx,
          }),
      );
    } else {
      this.progress = { step: `list ${name}` };
      const { member, note } = await chooseArchiveMember(
        this.current,
        format,
        config.security.maxArchiveEntries,
        limits,
        signal,
        (bytesDone, bytesTotal) => {
          this.progress = { step: `list ${name}`, bytesDone, bytesTotal };
        },
      );
      if (note) logger.info({ archive: name, member: member.path }, note);
      const out = this.outputPath(path.posix.basename(member.path));
      const archive = this.current;
      await this.step(
        `unpack ${member.path} from ${format === 'ova' ? 'OVA' : format} ${name}`,
        out,
        member.size,
        (ctx) =>
          format === 'zip'
            ? extractZipMember(archive, member.path, out, member.size, {
                signal: ctx.signal,
                onBytes: (b) => ctx.report(b, member.size),
              })
            : extractTarMember(archive, member.path, out, { signal: ctx.signal, onBytes: ctx.report }),
      );
    }
    const unpacked = path.basename(this.current);
    this.progress = { step: `inspect ${unpacked}` };
    const detected = await inspectFile(
      { path: this.current, fileName: unpacked },
      { signal, timeoutMs: toolTimeoutMs },
    );
    logger.info({ file: unpacked, ...detected }, `convert: ${unpacked} is ${detected.format}`);
    this.format = detected.format;
  }

  /**
   * The unwrapped image, checked to be an accepted, self-contained disk, as a disk the cloud takes
   * in the work folder: as it is when its format is one the cloud takes (`keep`), else converted
   * to raw (or, for a cloud that takes no raw, to the first format it takes).
   */
  async toRaw(): Promise<RawImage> {
    const { format, limits, toolTimeoutMs, workDir } = this;
    const name = path.basename(this.current);
    if (format === 'iso') {
      throw new ImageIntegrityError(
        `${name} is an ISO 9660 CD image (installation media), not a disk image; it cannot be registered as one`,
      );
    }
    if (!DISK_FORMATS.has(format) || !ACCEPTED_FORMATS.has(format)) {
      throw new ImageIntegrityError(
        `${name}: format '${format}' is not accepted (accepted: ${[...ACCEPTED_FORMATS].join(', ')})`,
      );
    }

    this.progress = { step: `check ${name}` };
    const checked = await checkDiskImage(this.current, format, { signal: this.signal, timeoutMs: toolTimeoutMs });
    if (checked.virtualSize > limits.maxVirtualBytes) {
      throw new ImageIntegrityError(
        `${name} has a virtual size of ${checked.virtualSize} bytes, more than the limit of ${limits.maxVirtualBytes} (${limits.virtualName})`,
      );
    }

    const output = convertedFormat(format, this.keep);
    if (format === output && path.dirname(this.current) === workDir) {
      // Already what the cloud takes, where we may keep it: no copy.
      const { size } = await stat(this.current);
      this.created.delete(this.current);
      if (output !== 'raw')
        this.deps.logger.info({ file: name, format }, `convert: keeping ${name} as ${format}, which the cloud takes`);
      return {
        path: this.current,
        format: output,
        virtualSize: output === 'raw' ? size : checked.virtualSize,
        bytes: size,
        steps: this.steps,
      };
    }
    const out = this.outputPath(output === 'raw' ? rawName(name) : `${rawName(name).replace(/\.raw$/, '')}.${output}`);
    const description =
      format === output
        ? `copy ${format} ${name} into the work folder`
        : `qemu-img convert ${name} from ${format} to ${output}`;
    const from = this.current;
    await this.step(description, out, checked.virtualSize, (ctx) =>
      qemuImgConvert(format, from, out, { output, timeoutMs: toolTimeoutMs, virtualSize: checked.virtualSize, ...ctx }),
    );
    this.created.delete(this.current);
    const { size } = await stat(this.current);
    return { path: this.current, format: output, virtualSize: checked.virtualSize, bytes: size, steps: this.steps };
  }

  /** Where a step writes: in the work folder, never over the file it reads. */
  private outputPath(name: string): string {
    const candidate = path.join(this.workDir, safeFileName(name));
    return candidate === this.current ? path.join(this.workDir, `unpacked-${safeFileName(name)}`) : candidate;
  }

  private async discard(file: string): Promise<void> {
    if (this.created.delete(file) && this.lease.owns()) await rm(file, { force: true });
  }

  /** Runs a step that writes about `bytes` to `out`, with space reserved and watched; `out` becomes the current file. */
  private async step(
    description: string,
    out: string,
    bytes: number,
    run: (ctx: StepContext) => Promise<void>,
  ): Promise<void> {
    const { signal, workDir, policy } = this;
    this.deps.logger.info({ step: description, from: this.current, to: out, bytes }, `convert: ${description}`);
    this.progress = { step: description };
    const reservation = await reserveSpace(workDir, bytes, description, policy);
    this.created.add(out);
    const diskFull = new AbortController();
    const stopWatching = watchDisk(
      workDir,
      policy,
      diskFull,
      description,
      bytes,
      this.deps.diskWatchMs ?? DISK_WATCH_MS,
    );
    const ctx: StepContext = {
      signal: AbortSignal.any([signal, diskFull.signal]),
      report: (bytesDone, bytesTotal) => {
        this.progress = {
          step: description,
          ...(bytesDone === undefined ? {} : { bytesDone }),
          ...(bytesTotal === undefined ? {} : { bytesTotal }),
        };
      },
    };
    try {
      await run(ctx);
    } catch (err) {
      await this.discard(out);
      if (diskFull.signal.aborted && !signal.aborted) throw diskFull.signal.reason;
      if (signal.aborted) throw signal.reason;
      throw asOutOfSpace(err, workDir, description, bytes);
    } finally {
      stopWatching();
      reservation.release();
    }
    this.steps.push(description);
    await this.discard(this.current);
    this.current = out;
  }
}

/**
 * Aborts `controller` with an OutOfSpaceError when the free space of `dir` falls into the
 * reserve while a step writes: estimates can be wrong (bzip2 does not record its size, other
 * images on the host write too), and the disk must never fill up.
 */
function watchDisk(
  dir: string,
  policy: DiskPolicy,
  controller: AbortController,
  what: string,
  neededBytes: number,
  everyMs: number,
): () => void {
  let checking = false;
  const timer = setInterval(() => {
    if (checking || controller.signal.aborted) return;
    checking = true;
    filesystemSpace(dir)
      .then(({ free, total }) => {
        const reserve = reserveOf(policy, total);
        if (free < reserve) {
          controller.abort(
            new OutOfSpaceError(
              `not enough disk space in ${dir} for ${what}: ${free} bytes free, less than the reserve of ${reserve}; stopped before the disk filled up`,
              {
                neededBytes,
                freeBytes: free,
                canEverFit: true,
              },
            ),
          );
        }
      })
      .catch(() => undefined)
      .finally(() => (checking = false));
  }, everyMs);
  return () => clearInterval(timer);
}

/** The largest image file of a zip or tar without an OVF descriptor, naming the files it leaves. */
function largestImageMember(
  kind: 'zip' | 'tar',
  name: string,
  members: ArchiveMember[],
): { member: ArchiveMember; note?: string } {
  const choice = chooseImageMember(members);
  if (!choice) throw new ImageIntegrityError(`${name} holds no image file`);
  const note = choice.others.length
    ? `${kind} holds several files; taking the largest, ignoring ${choice.others.join(', ')}`
    : undefined;
  return { member: choice.member, note };
}

async function chooseArchiveMember(
  file: string,
  format: string,
  maxEntries: number,
  limits: ConvertLimits,
  signal: AbortSignal,
  onBytes: Report,
): Promise<{ member: ArchiveMember; note?: string }> {
  const name = path.basename(file);
  const archiveLimits = { maxEntries, maxUnpackedBytes: limits.maxUnpackedBytes, unpackedName: limits.unpackedName };
  if (format === 'zip') {
    const members = await listZipArchive(file, { maxEntries });
    checkMembers(name, members, archiveLimits);
    return largestImageMember('zip', name, members);
  }
  const { size } = await stat(file);
  const { members, ovfs } = await listTarArchive(file, { signal, maxEntries, onBytes: (b) => onBytes(b, size) });
  checkMembers(name, members, archiveLimits);
  const [ovfPath, ovfXml] = [...ovfs.entries()][0] ?? [];
  if (ovfXml !== undefined) {
    const choice = chooseOvfDisk(ovfXml);
    const href = choice.href.replace(/^(\.\/)+/, '');
    const member = members.find((m) => m.kind === 'file' && m.path === href);
    if (!member)
      throw new ImageIntegrityError(`${name}: disk ${choice.href} named by ${ovfPath} is not in the archive`);
    const others = choice.others.length ? `; other disks not used: ${choice.others.join(', ')}` : '';
    return { member, note: `OVF ${ovfPath}: boot disk ${href} (${choice.reason})${others}` };
  }
  if (format === 'ova') throw new ImageIntegrityError(`${name} is an OVA without a readable .ovf descriptor`);
  return largestImageMember('tar', name, members);
}

/**
 * How many bytes decompressing `file` writes, as far as the file tells: xz records it in its
 * index, gzip the size modulo 4 GiB in its trailer, bzip2 nothing. At least the compressed size;
 * the disk watch covers what an estimate misses.
 */
async function decompressedEstimate(format: string, file: string, signal: AbortSignal): Promise<number> {
  const { size } = await stat(file);
  if (format === 'gz' && size >= 18) {
    const fh = await open(file, 'r');
    try {
      const trailer = Buffer.alloc(4);
      await fh.read(trailer, 0, 4, size - 4);
      return Math.max(size, trailer.readUInt32LE(0));
    } finally {
      await fh.close();
    }
  }
  if (format === 'xz') {
    const [command, args] = guarded('xz', ['--robot', '--list', '--', file]);
    const result = await execa(command, args, {
      reject: false,
      cancelSignal: signal,
      timeout: 60_000,
      stdin: 'ignore',
    });
    const totals = String(result.stdout)
      .split('\n')
      .find((l) => l.startsWith('totals\t'))
      ?.split('\t');
    const uncompressed = Number(totals?.[4]);
    if (result.exitCode === 0 && Number.isSafeInteger(uncompressed)) return Math.max(size, uncompressed);
  }
  return size;
}

/** Counts the bytes read from a file, for progress. */
function counter(onBytes: (total: number) => void): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      total += chunk.length;
      onBytes(total);
      done(null, chunk);
    },
  });
}

async function decompress(
  format: string,
  file: string,
  out: string,
  opts: { maxBytes: number; limitName: string; timeoutMs: number; estimate: number } & StepContext,
): Promise<void> {
  const name = path.basename(file);
  const limit = byteLimit(opts.maxBytes, name, undefined, opts.limitName);
  const sink = createWriteStream(out, { mode: 0o600 });
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = AbortSignal.any([opts.signal, timeout]);
  if (format === 'gz') {
    // Progress counts the compressed bytes read: the one total known in advance.
    const { size } = await stat(file);
    const read = counter((bytes) => opts.report(bytes, size));
    try {
      await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), read, createGunzip(), limit, sink, {
        signal,
      });
    } catch (err) {
      throw decompressError(err, name, opts.signal, timeout);
    }
    return;
  }
  const program = format === 'bz2' ? 'bzip2' : 'xz';
  const [command, args] = guarded(program, ['-dc', '--', file]);
  const subprocess = execa(command, args, {
    buffer: { stdout: false, stderr: true },
    reject: false,
    cancelSignal: signal,
    forceKillAfterDelay: 5000,
    stdin: 'ignore',
  });
  const written = counter((bytes) => opts.report(bytes, opts.estimate));
  try {
    await pipeline(subprocess.stdout, limit, written, sink, { signal });
  } catch (err) {
    subprocess.kill('SIGKILL');
    await subprocess;
    throw decompressError(err, name, opts.signal, timeout);
  }
  const result = await subprocess;
  if (result.exitCode !== 0) {
    if (opts.signal.aborted) throw opts.signal.reason;
    if (timeout.aborted) throw new ToolError(`decompressing ${name} timed out`);
    const message = String(result.stderr).trim().split('\n').pop() || `exit code ${result.exitCode}`;
    throw new ImageIntegrityError(`${program} cannot decompress ${name}: ${message}`);
  }
}

function decompressError(err: unknown, name: string, cancel: AbortSignal, timeout: AbortSignal): unknown {
  if (cancel.aborted) return cancel.reason;
  if (timeout.aborted) return new ToolError(`decompressing ${name} timed out`);
  if (err instanceof ImageIntegrityError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return err;
  if (code === 'EIO') return new ToolError(`decompressing ${name}: ${(err as Error).message}`);
  return new ImageIntegrityError(`${name} cannot be decompressed: ${(err as Error).message}`);
}

/**
 * `qemu-img convert -p` from our json: spec (explicit driver, plain file, no backing file) to a
 * raw (or qcow2) file, reporting its progress; killed when the step is aborted, and with the worker.
 */
async function qemuImgConvert(
  format: string,
  file: string,
  out: string,
  opts: { output: DiskFormat; timeoutMs: number; virtualSize: number } & StepContext,
): Promise<void> {
  const name = path.basename(file);
  const [command, args] = guarded('qemu-img', ['convert', '-p', '-O', opts.output, qemuImageSpec(file, format), out]);
  const subprocess = execa(command, args, {
    reject: false,
    timeout: opts.timeoutMs,
    cancelSignal: opts.signal,
    forceKillAfterDelay: 5000,
    stdin: 'ignore',
    buffer: { stdout: false, stderr: true },
  });
  let pending = '';
  subprocess.stdout?.setEncoding('latin1');
  subprocess.stdout?.on('data', (chunk: string) => {
    pending = (pending + chunk).slice(-256);
    const percent = qemuProgressPercent(pending);
    if (percent !== undefined) opts.report(Math.round((percent / 100) * opts.virtualSize), opts.virtualSize);
  });
  const result = await subprocess;
  if (result.exitCode === 0) return;
  if (opts.signal.aborted) throw opts.signal.reason;
  if (result.timedOut)
    throw new ToolError(`qemu-img convert of ${name} timed out after ${opts.timeoutMs} ms (worker.toolTimeoutMs)`);
  if (result.signal) throw new ToolError(`qemu-img convert of ${name} was killed by ${result.signal}`);
  if (result.exitCode === undefined) throw new ToolError(`qemu-img could not be run: ${result.shortMessage}`);
  const message = (String(result.stderr).trim().split('\n').pop() || `exit code ${result.exitCode}`).replace(
    /json:\{.*?\}(?=[:'\s]|$)/g,
    name,
  );
  if (/No space left on device|Disk quota exceeded/i.test(message)) {
    throw new OutOfSpaceError(`the disk of ${path.dirname(out)} filled up while converting ${name}: ${message}`, {
      neededBytes: opts.virtualSize,
      freeBytes: 0,
      canEverFit: true,
    });
  }
  const transient = /Input\/output error|Cannot allocate memory/i.test(message);
  throw new ToolError(`qemu-img cannot convert ${name} from ${format} to ${opts.output}: ${message}`, {
    permanent: !transient,
    exitCode: result.exitCode,
  });
}
