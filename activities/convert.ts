import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { execa } from 'execa';
import type { Config } from '../core/config.js';
import { ImageIntegrityError, ToolError } from '../core/errors.js';
import type { Logger } from '../core/logging.js';
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
import { cancellationSignal, heartbeat } from './context.js';
import { DISK_FORMATS, WRAPPER_FORMATS, inspectImage, normaliseFormat, qemuImgInfo } from './inspect.js';
import { chooseOvfDisk } from './ovf.js';
import type { ConvertInput, RawImage } from './types.js';
import { safeFileName } from './workspace.js';

export interface ConvertDeps {
  config: Config;
  logger: Logger;
}

/** Wrappers inside wrappers: `.tar.gz` is 2; more than this is not an image, it is a puzzle. */
const MAX_STEPS = 6;

const COMPRESSED_SUFFIX: Record<string, RegExp> = {
  gz: /\.(gz|gzip)$/i,
  bz2: /\.(bz2|bzip2)$/i,
  xz: /\.xz$/i,
};

/** `image.vmdk.gz` → `image.vmdk`; `image.tgz` → `image.tar`; no suffix → `image.unpacked`. */
export function decompressedName(name: string, format: string): string {
  if (/\.tgz$/i.test(name)) return name.replace(/\.tgz$/i, '.tar');
  if (/\.t(bz2?|xz)$/i.test(name)) return name.replace(/\.t(bz2?|xz)$/i, '.tar');
  const suffix = COMPRESSED_SUFFIX[format];
  return suffix && suffix.test(name) ? name.replace(suffix, '') : `${name}.unpacked`;
}

/** `image.qcow2` → `image.raw`; the raw result's name. */
export function rawName(name: string): string {
  return `${name.replace(/\.(qcow2?|vmdk|vdi|vhdx?|vpc|qed|img|raw|bin|dd|parallels|dmg|cloop|bochs)$/i, '')}.raw`;
}

/** Heartbeats at most once a second with the step and its byte count (Web UI progress). */
function progressReporter(step: string): (bytes?: number) => void {
  let last = 0;
  return (bytes?: number) => {
    const now = Date.now();
    if (now - last < 1000) return;
    last = now;
    heartbeat({ step, ...(bytes === undefined ? {} : { bytes }) });
  };
}

/**
 * Unwraps and converts an image to raw, one step at a time, re-detecting the format after
 * every step. Intermediate files are removed as soon as the next step has succeeded; on any
 * failure every file this call created is removed and the error propagates (a half-converted
 * image is never passed on as raw). The input file itself is left alone, so a retry can start over.
 */
export async function convertToRaw(deps: ConvertDeps, input: ConvertInput): Promise<RawImage> {
  const { config, logger } = deps;
  const security = config.security;
  const signal = cancellationSignal();
  const workDir = path.resolve(input.workDir);
  const steps: string[] = [];
  const created = new Set<string>();
  const toolTimeoutMs = config.worker.toolTimeoutMs;

  let current = path.resolve(input.path);
  let format = normaliseFormat(input.format) ?? input.format;
  const discard = async (file: string) => {
    if (created.delete(file)) await rm(file, { force: true });
  };
  /** Where a step writes: in the work folder, never over the file it reads. */
  const outputPath = (name: string) => {
    const candidate = path.join(workDir, safeFileName(name));
    return candidate === current ? path.join(workDir, `unpacked-${safeFileName(name)}`) : candidate;
  };
  const step = async (description: string, out: string, run: () => Promise<void>) => {
    logger.info({ step: description, from: current, to: out }, `convert: ${description}`);
    created.add(out);
    try {
      await run();
    } catch (err) {
      await discard(out);
      throw err;
    }
    steps.push(description);
    await discard(current);
    current = out;
  };

  try {
    for (let n = 0; ; n++) {
      if (signal?.aborted) throw signal.reason;
      if (n >= MAX_STEPS) throw new ImageIntegrityError(`${path.basename(input.path)} is wrapped more than ${MAX_STEPS} levels deep`);
      const name = path.basename(current);

      if (WRAPPER_FORMATS.has(format)) {
        if (format === 'gz' || format === 'bz2' || format === 'xz') {
          const out = outputPath(decompressedName(name, format));
          await step(`${format === 'gz' ? 'gunzip' : format === 'bz2' ? 'bunzip2' : 'unxz'} ${name}`, out, () =>
            decompress(format, current, out, { maxBytes: security.maxUnpackedBytes, timeoutMs: toolTimeoutMs, signal }),
          );
        } else {
          const { member, note } = await chooseArchiveMember(current, format, security);
          if (note) logger.info({ archive: name, member: member.path }, note);
          const out = outputPath(path.posix.basename(member.path));
          await step(`unpack ${member.path} from ${format === 'ova' ? 'OVA' : format} ${name}`, out, () =>
            format === 'zip' ? extractZipMember(current, member.path, out, member.size) : extractTarMember(current, member.path, out),
          );
        }
        const detected = await inspectImage({ path: current, fileName: path.basename(current) }, { signal });
        logger.info({ file: path.basename(current), ...detected }, `convert: ${path.basename(current)} is ${detected.format}`);
        format = detected.format;
        continue;
      }

      if (format === 'iso') {
        throw new ImageIntegrityError(`${name} is an ISO 9660 CD image (installation media), not a disk image; it cannot be registered as one`);
      }
      if (!DISK_FORMATS.has(format)) throw new ImageIntegrityError(`${name}: format '${format}' is not supported`);

      const info = await qemuImgInfo(current, format, { signal });
      if (info.backingFile) {
        throw new ImageIntegrityError(`${name} refers to a backing file (${info.backingFile}); images must be self-contained`);
      }
      const foreignExtents = info.extents.filter((e) => path.resolve(path.dirname(current), e) !== current);
      if (foreignExtents.length) {
        throw new ImageIntegrityError(`${name} is a VMDK whose data lives in other files (${foreignExtents.join(', ')}); only single-file VMDKs are supported`);
      }
      if (info.virtualSize > security.maxVirtualBytes) {
        throw new ImageIntegrityError(`${name} has a virtual size of ${info.virtualSize} bytes, more than the limit of ${security.maxVirtualBytes} (security.maxVirtualBytes)`);
      }

      if (format === 'raw' && path.dirname(current) === workDir) {
        // Already raw where we may keep it: no copy.
        const { size } = await stat(current);
        created.delete(current);
        return { path: current, virtualSize: size, bytes: size, steps };
      }
      const out = outputPath(rawName(name));
      const description = format === 'raw' ? `copy raw ${name} into the work folder` : `qemu-img convert ${name} from ${format} to raw`;
      await step(description, out, () => qemuImgConvert(format, current, out, { timeoutMs: toolTimeoutMs, signal }));
      created.delete(current);
      const { size } = await stat(current);
      return { path: current, virtualSize: info.virtualSize, bytes: size, steps };
    }
  } catch (err) {
    for (const file of created) await rm(file, { force: true });
    throw err;
  }
}

async function chooseArchiveMember(
  file: string,
  format: string,
  security: Config['security'],
): Promise<{ member: ArchiveMember; note?: string }> {
  const name = path.basename(file);
  const limits = { maxEntries: security.maxArchiveEntries, maxUnpackedBytes: security.maxUnpackedBytes };
  if (format === 'zip') {
    const members = await listZipArchive(file);
    checkMembers(name, members, limits);
    const choice = chooseImageMember(members);
    if (!choice) throw new ImageIntegrityError(`${name} holds no image file`);
    return { member: choice.member, note: choice.others.length ? `zip holds several files; taking the largest, ignoring ${choice.others.join(', ')}` : undefined };
  }
  const { members, ovfs } = await listTarArchive(file);
  checkMembers(name, members, limits);
  const [ovfPath, ovfXml] = [...ovfs.entries()][0] ?? [];
  if (ovfXml !== undefined) {
    const choice = chooseOvfDisk(ovfXml);
    const href = choice.href.replace(/^(\.\/)+/, '');
    const member = members.find((m) => m.kind === 'file' && m.path === href);
    if (!member) throw new ImageIntegrityError(`${name}: disk ${choice.href} named by ${ovfPath} is not in the archive`);
    const others = choice.others.length ? `; other disks not used: ${choice.others.join(', ')}` : '';
    return { member, note: `OVF ${ovfPath}: boot disk ${href} (${choice.reason})${others}` };
  }
  if (format === 'ova') throw new ImageIntegrityError(`${name} is an OVA without a readable .ovf descriptor`);
  const choice = chooseImageMember(members);
  if (!choice) throw new ImageIntegrityError(`${name} holds no image file`);
  return { member: choice.member, note: choice.others.length ? `tar holds several files; taking the largest, ignoring ${choice.others.join(', ')}` : undefined };
}

async function decompress(
  format: string,
  file: string,
  out: string,
  opts: { maxBytes: number; timeoutMs: number; signal?: AbortSignal },
): Promise<void> {
  const name = path.basename(file);
  const report = progressReporter(`decompress ${name}`);
  const limit = byteLimit(opts.maxBytes, name, report);
  const sink = createWriteStream(out, { mode: 0o600 });
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  if (format === 'gz') {
    try {
      await pipeline(createReadStream(file), createGunzip(), limit, sink, { signal });
    } catch (err) {
      throw decompressError(err, name, opts.signal, timeout);
    }
    return;
  }
  const program = format === 'bz2' ? 'bzip2' : 'xz';
  const subprocess = execa(program, ['-dc', '--', file], {
    buffer: { stdout: false, stderr: true },
    reject: false,
    cancelSignal: signal,
    forceKillAfterDelay: 5000,
  });
  try {
    await pipeline(subprocess.stdout, limit, sink, { signal });
  } catch (err) {
    subprocess.kill();
    await subprocess;
    throw decompressError(err, name, opts.signal, timeout);
  }
  const result = await subprocess;
  if (result.exitCode !== 0) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const message = String(result.stderr).trim().split('\n').pop() || `exit code ${result.exitCode}`;
    throw new ImageIntegrityError(`${program} cannot decompress ${name}: ${message}`);
  }
}

function decompressError(err: unknown, name: string, cancel: AbortSignal | undefined, timeout: AbortSignal): Error {
  if (cancel?.aborted) return cancel.reason as Error;
  if (timeout.aborted) return new ToolError(`decompressing ${name} timed out`);
  if (err instanceof ImageIntegrityError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EIO') return new ToolError(`decompressing ${name}: ${(err as Error).message}`);
  return new ImageIntegrityError(`${name} cannot be decompressed: ${(err as Error).message}`);
}

async function qemuImgConvert(format: string, file: string, out: string, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<void> {
  const report = progressReporter(`qemu-img convert ${path.basename(file)}`);
  const timer = setInterval(() => report(), 5000);
  try {
    const result = await execa('qemu-img', ['convert', '-f', format, '-O', 'raw', '--', file, out], {
      reject: false,
      timeout: opts.timeoutMs,
      cancelSignal: opts.signal,
      forceKillAfterDelay: 5000,
    });
    if (result.exitCode === 0) return;
    if (result.isCanceled && opts.signal?.aborted) throw opts.signal.reason;
    if (result.timedOut) throw new ToolError(`qemu-img convert of ${path.basename(file)} timed out after ${opts.timeoutMs} ms (worker.toolTimeoutMs)`);
    if (result.signal) throw new ToolError(`qemu-img convert of ${path.basename(file)} was killed by ${result.signal}`);
    const message = String(result.stderr).trim().split('\n').pop() || `exit code ${result.exitCode}`;
    const transient = /No space left|Input\/output error|Cannot allocate memory/i.test(message);
    throw new ToolError(`qemu-img cannot convert ${path.basename(file)} from ${format} to raw: ${message}`, {
      permanent: !transient,
      exitCode: result.exitCode,
    });
  } finally {
    clearInterval(timer);
  }
}
