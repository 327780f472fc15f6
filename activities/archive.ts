import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { Parser, Unpack, type ReadEntry } from 'tar';
import yauzl from 'yauzl';
import { ImageIntegrityError } from '../core/errors.js';

interface ArchiveLimits {
  maxEntries: number;
  maxUnpackedBytes: number;
  /** How the unpacked limit is named in errors (default `security.maxUnpackedBytes`). */
  unpackedName?: string;
}

/** Abort and progress for the long archive steps (listing reads the whole tar, too). */
interface StreamOptions {
  signal?: AbortSignal;
  /** Bytes of the archive read (tar) or of the member written (zip) so far. */
  onBytes?: (bytes: number) => void;
}

export interface ArchiveMember {
  path: string;
  size: number;
  kind: 'file' | 'directory' | 'link';
  linkTarget?: string;
}

/** Files in an image archive that are never the image. */
const METADATA = /\.(ovf|mf|cert|xml|txt|md|sha\d*|md5|asc|sig|json)$/i;

/**
 * Why a member may not be unpacked, or undefined when it is safe: the path must be relative
 * and stay inside the target folder; a link must point inside the archive too. Archive
 * contents come from the network, so any doubt refuses the whole archive.
 */
export function unsafeMemberReason(member: ArchiveMember): string | undefined {
  const p = member.path;
  if (p.startsWith('/') || /^[A-Za-z]:/.test(p) || p.startsWith('\\')) return `absolute path '${p}'`;
  const parts = p.split(/[\\/]/);
  if (parts.includes('..')) return `path '${p}' leaves the folder ('..')`;
  if (member.kind === 'link') {
    const target = member.linkTarget ?? '';
    if (target.startsWith('/') || /^[A-Za-z]:/.test(target)) return `link '${p}' points to absolute path '${target}'`;
    const resolved = path.posix.normalize(
      path.posix.join(path.posix.dirname(p.replace(/\\/g, '/')), target.replace(/\\/g, '/')),
    );
    if (resolved === '..' || resolved.startsWith('../')) return `link '${p}' points outside the archive ('${target}')`;
  }
  return undefined;
}

/** Checks every member and the totals; throws ImageIntegrityError naming the first problem. */
export function checkMembers(archive: string, members: readonly ArchiveMember[], limits: ArchiveLimits): void {
  if (members.length > limits.maxEntries) throw tooManyEntries(archive, limits.maxEntries, members.length);
  let total = 0;
  for (const member of members) {
    const reason = unsafeMemberReason(member);
    if (reason) throw new ImageIntegrityError(`${archive} refused: ${reason}`);
    total += member.size;
  }
  if (total > limits.maxUnpackedBytes) {
    throw new ImageIntegrityError(
      `${archive} would unpack to ${total} bytes, more than the limit of ${limits.maxUnpackedBytes} (${limits.unpackedName ?? 'security.maxUnpackedBytes'})`,
    );
  }
}

const normaliseMemberPath = (p: string) =>
  p
    .replace(/\\/g, '/')
    .replace(/^(\.\/)+/, '')
    .replace(/\/+$/, '');

/** The image among the members of a plain archive: the only (else the largest) non-metadata file. */
export function chooseImageMember(
  members: readonly ArchiveMember[],
): { member: ArchiveMember; others: string[] } | undefined {
  const candidates = members.filter((m) => m.kind === 'file' && !METADATA.test(m.path)).sort((a, b) => b.size - a.size);
  if (!candidates.length) return undefined;
  return { member: candidates[0], others: candidates.slice(1).map((m) => m.path) };
}

// ---- tar (and OVA, which is a tar) ----

interface TarListing {
  members: ArchiveMember[];
  /** Content of .ovf members (small), by member path. */
  ovfs: Map<string, string>;
}

/** OVF descriptors kept in memory while listing, all together (an OVA has one). */
const MAX_OVF_BYTES = 4 * 1024 * 1024;

/** The refusal of an archive with more entries than the limit (the same words whenever it is found). */
function tooManyEntries(archive: string, maxEntries: number, counted?: number): ImageIntegrityError {
  return new ImageIntegrityError(
    counted === undefined
      ? `${archive} has more entries than the limit of ${maxEntries} (security.maxArchiveEntries); refused without reading further`
      : `${archive} has ${counted} entries, more than the limit of ${maxEntries} (security.maxArchiveEntries)`,
  );
}

/** What a listing may hold: it stops reading once it has seen one entry more than `maxEntries`. */
interface ListingLimits {
  maxEntries?: number;
}

/**
 * Streams a file into a node-tar Parser (or Unpack), counting bytes for progress, and stops
 * when `signal` aborts. node-tar reading the file itself offers neither.
 */
function feedTar(file: string, parser: Parser, done: 'end' | 'close', opts: StreamOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const source = createReadStream(file, { highWaterMark: 4 * 1024 * 1024 });
    let bytes = 0;
    const onAbort = () => {
      source.destroy();
      parser.abort(opts.signal?.reason as Error);
      reject(opts.signal?.reason as Error);
    };
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const finish = (err?: unknown) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err as Error);
      else resolve();
    };
    source.on('data', (chunk) => {
      bytes += chunk.length;
      opts.onBytes?.(bytes);
    });
    source.on('error', finish);
    parser.on('error', finish);
    parser.on(done, () => finish());
    source.pipe(parser);
  });
}

/**
 * The members of a tar (and the text of its small .ovf members), read as a stream: a listing
 * stops at the entry past `maxEntries`, so an archive of countless empty entries costs neither
 * memory nor the time to read it to its end.
 */
export async function listTarArchive(file: string, opts: StreamOptions & ListingLimits = {}): Promise<TarListing> {
  const members: ArchiveMember[] = [];
  const ovfs = new Map<string, string>();
  const refused: string[] = [];
  const tooMany = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, tooMany.signal]) : tooMany.signal;
  let ovfBytes = 0;
  const parser = new Parser({
    strict: true,
    onReadEntry(entry: ReadEntry) {
      if (opts.maxEntries !== undefined && members.length >= opts.maxEntries) {
        entry.resume();
        tooMany.abort(tooManyEntries(path.basename(file), opts.maxEntries));
        return;
      }
      const p = normaliseMemberPath(entry.path);
      const type = entry.type;
      if (type === 'File' || type === 'OldFile' || type === 'ContiguousFile') {
        members.push({ path: p, size: entry.size, kind: 'file' });
        if (/\.ovf$/i.test(p) && ovfBytes + entry.size <= MAX_OVF_BYTES) {
          ovfBytes += entry.size;
          const chunks: Buffer[] = [];
          entry.on('data', (c: Buffer) => chunks.push(c));
          entry.on('end', () => ovfs.set(p, Buffer.concat(chunks).toString('utf8')));
          return;
        }
      } else if (type === 'Directory') {
        members.push({ path: p, size: 0, kind: 'directory' });
      } else if (type === 'SymbolicLink' || type === 'Link') {
        members.push({ path: p, size: 0, kind: 'link', linkTarget: entry.linkpath });
      } else {
        refused.push(`${type} entry '${p}'`);
      }
      entry.resume();
    },
  });
  try {
    await feedTar(file, parser, 'end', { ...opts, signal });
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (tooMany.signal.aborted) throw tooMany.signal.reason;
    throw new ImageIntegrityError(`${path.basename(file)} is not a readable tar archive: ${(err as Error).message}`);
  }
  if (refused.length) throw new ImageIntegrityError(`${path.basename(file)} refused: it holds a ${refused[0]}`);
  return { members, ovfs };
}

/** Unpacks one regular-file member to `dest` (through a private staging folder next to it). */
export async function extractTarMember(
  file: string,
  memberPath: string,
  dest: string,
  opts: StreamOptions = {},
): Promise<void> {
  const staging = `${dest}.unpacking`;
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { mode: 0o700 });
  try {
    const unpack = new Unpack({
      cwd: staging,
      strict: true,
      preservePaths: false,
      preserveOwner: false,
      filter: (p, entry) =>
        normaliseMemberPath(p) === memberPath &&
        (entry as ReadEntry).type !== 'SymbolicLink' &&
        (entry as ReadEntry).type !== 'Link',
    });
    await feedTar(file, unpack, 'close', opts);
    const out = path.join(staging, memberPath);
    if (!(await stat(out)).isFile())
      throw new ImageIntegrityError(`${memberPath} in ${path.basename(file)} is not a regular file`);
    await rename(out, dest);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

// ---- zip ----

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) =>
    yauzl.open(
      file,
      { lazyEntries: true, autoClose: false, decodeStrings: true, validateEntrySizes: true, strictFileNames: false },
      (err, zip) => (err ? reject(err) : resolve(zip)),
    ),
  );
}

async function forEachZipEntry(zip: yauzl.ZipFile, fn: (entry: yauzl.Entry) => Promise<boolean | void>): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    zip.on('error', reject);
    zip.on('end', () => resolve());
    zip.on('entry', (entry: yauzl.Entry) => {
      fn(entry).then((stop) => (stop ? resolve() : zip.readEntry()), reject);
    });
    zip.readEntry();
  });
}

function zipMember(entry: yauzl.Entry): ArchiveMember {
  const p = normaliseMemberPath(entry.fileName);
  const mode = (entry.externalFileAttributes >>> 16) & S_IFMT;
  if (mode === S_IFLNK) return { path: p, size: 0, kind: 'link', linkTarget: '' };
  if (entry.fileName.endsWith('/')) return { path: p, size: 0, kind: 'directory' };
  return { path: p, size: entry.uncompressedSize, kind: 'file' };
}

/** The members of a zip; one whose central directory counts more than `maxEntries` is refused before any is read. */
export async function listZipArchive(file: string, limits: ListingLimits = {}): Promise<ArchiveMember[]> {
  let zip: yauzl.ZipFile;
  try {
    zip = await openZip(file);
  } catch (err) {
    throw new ImageIntegrityError(`${path.basename(file)} is not a readable zip archive: ${(err as Error).message}`);
  }
  if (limits.maxEntries !== undefined && zip.entryCount > limits.maxEntries) {
    zip.close();
    throw tooManyEntries(path.basename(file), limits.maxEntries, zip.entryCount);
  }
  try {
    const members: ArchiveMember[] = [];
    await forEachZipEntry(zip, async (entry) => {
      const member = zipMember(entry);
      // yauzl does not read link targets from the entry; a zip symlink is refused like an escaping link.
      if (member.kind === 'link') member.linkTarget = '/';
      members.push(member);
    });
    return members;
  } catch (err) {
    throw new ImageIntegrityError(`${path.basename(file)} is not a readable zip archive: ${(err as Error).message}`);
  } finally {
    zip.close();
  }
}

/** Unpacks one member to `dest`, refusing more bytes than the entry declared (validated by yauzl). */
export async function extractZipMember(
  file: string,
  memberPath: string,
  dest: string,
  maxBytes: number,
  opts: StreamOptions = {},
): Promise<void> {
  const zip = await openZip(file);
  try {
    let found = false;
    await forEachZipEntry(zip, async (entry) => {
      if (normaliseMemberPath(entry.fileName) !== memberPath) return false;
      found = true;
      const stream = await new Promise<NodeJS.ReadableStream>((resolve, reject) =>
        zip.openReadStream(entry, (err, s) => (err ? reject(err) : resolve(s))),
      );
      await pipeline(stream, byteLimit(maxBytes, memberPath, opts.onBytes), createWriteStream(dest, { mode: 0o600 }), {
        signal: opts.signal,
      });
      return true;
    });
    if (!found) throw new ImageIntegrityError(`${memberPath} not found in ${path.basename(file)}`);
  } catch (err) {
    await rm(dest, { force: true });
    if (opts.signal?.aborted) throw opts.signal.reason;
    const code = (err as NodeJS.ErrnoException).code;
    if (err instanceof ImageIntegrityError || code === 'ENOSPC' || code === 'EDQUOT') throw err;
    throw new ImageIntegrityError(`cannot unpack ${memberPath} from ${path.basename(file)}: ${(err as Error).message}`);
  } finally {
    zip.close();
  }
}

/** A pass-through that fails once more than `maxBytes` went through (decompression bombs). */
export function byteLimit(
  maxBytes: number,
  what: string,
  onBytes?: (total: number) => void,
  limitName = 'security.maxUnpackedBytes',
): Transform {
  let total = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      total += chunk.length;
      if (total > maxBytes) {
        done(new ImageIntegrityError(`${what} unpacks to more than ${maxBytes} bytes (${limitName})`));
        return;
      }
      onBytes?.(total);
      done(null, chunk);
    },
  });
}
