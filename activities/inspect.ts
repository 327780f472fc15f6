import { open } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { ImageIntegrityError, ToolError } from '../core/errors.js';
import { cancellationSignal } from '../runtime/context.js';
import { guarded } from '../runtime/tool-runner.js';
import type { ActivityDeps } from '../runtime/deps.js';
import type { ImageFormatInfo, InspectInput } from './types.js';

/**
 * Bytes read from the start of a file: enough for the ISO 9660 volume descriptor at 0x8001, a
 * VMDK's embedded descriptor and the btrfs superblock at 0x10040.
 */
const HEADER_BYTES = 68 * 1024;
/** Bytes read from the end: the VHD footer. */
const TAIL_BYTES = 512;

/** Formats qemu-img reads as disk images; everything else here is a wrapper or not a disk. */
export const DISK_FORMATS = new Set([
  'raw',
  'qcow2',
  'vmdk',
  'vdi',
  'vpc',
  'vhdx',
  'qed',
  'qcow',
  'parallels',
  'dmg',
  'cloop',
  'bochs',
  'luks',
]);

/**
 * The disk formats we convert: an allow-list, each with checks that the image is one
 * self-contained file (formatProblem). The others qemu-img knows (qcow v1, parallels, dmg,
 * cloop, bochs, luks) are refused: rare for cloud images, and each brings its own ways to name
 * other files or to need a secret.
 */
export const ACCEPTED_FORMATS: ReadonlySet<string> = new Set(['raw', 'qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx', 'qed']);
export const WRAPPER_FORMATS = new Set(['gz', 'bz2', 'xz', 'zip', 'tar', 'ova']);

/** Formats whose files always carry a signature we check; a hint naming one is contradicted when it is absent. */
const SIGNED_FORMATS = new Set(['qcow2', 'vmdk', 'vdi', 'vhdx', 'qed', 'iso', 'gz', 'bz2', 'xz', 'zip', 'tar', 'ova']);

/** Names people and image lists use for formats (hv:format is free text) → ours. */
const ALIASES: Record<string, string> = {
  img: 'raw',
  raw: 'raw',
  dd: 'raw',
  diskdump: 'raw',
  qcow2: 'qcow2',
  qcow: 'qcow',
  vmdk: 'vmdk',
  vdi: 'vdi',
  vhd: 'vpc',
  vpc: 'vpc',
  vhdx: 'vhdx',
  qed: 'qed',
  iso: 'iso',
  gz: 'gz',
  gzip: 'gz',
  tgz: 'gz',
  bz2: 'bz2',
  bzip2: 'bz2',
  xz: 'xz',
  zip: 'zip',
  tar: 'tar',
  ova: 'ova',
  parallels: 'parallels',
  dmg: 'dmg',
  cloop: 'cloop',
  bochs: 'bochs',
  luks: 'luks',
};

/** `QCOW2`, `.qcow2`, ` vhd ` → our format name; undefined when it names nothing we know. */
export function normaliseFormat(name: string | undefined): string | undefined {
  if (!name) return undefined;
  const key = name.trim().toLowerCase().replace(/^\./, '');
  return ALIASES[key];
}

/** The extension of a published file name, without query string or fragment: `a.vmdk.gz?x=1` → `gz`. */
export function fileExtension(fileName: string | undefined): string | undefined {
  if (!fileName) return undefined;
  const base = path.posix.basename(fileName.replace(/[?#].*$/, ''));
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(dot + 1).toLowerCase() : undefined;
}

const ascii = (buf: Buffer, offset: number, length: number) =>
  buf.length >= offset + length ? buf.toString('latin1', offset, offset + length) : '';

const startsWithBytes = (buf: Buffer, offset: number, bytes: number[]) =>
  buf.length >= offset + bytes.length && bytes.every((b, i) => buf[offset + i] === b);

/** The name of the first member of a tar archive, following a pax or GNU long-name header. */
export function firstTarEntryName(header: Buffer): string | undefined {
  if (ascii(header, 257, 5) !== 'ustar') return undefined;
  const field = (offset: number, length: number) => {
    const s = header.toString('utf8', offset, offset + length);
    const nul = s.indexOf('\0');
    return nul >= 0 ? s.slice(0, nul) : s;
  };
  const type = String.fromCharCode(header[156] || 0x30);
  if (type === 'x' || type === 'L') {
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const data = header.toString('utf8', 512, Math.min(header.length, 512 + size));
    if (type === 'L') return data.replace(/\0.*$/s, '');
    const pathRecord = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data);
    if (pathRecord) return pathRecord[1];
    return firstTarEntryName(header.subarray(512 + Math.ceil(size / 512) * 512));
  }
  const prefix = field(345, 155);
  const name = field(0, 100);
  return prefix ? `${prefix}/${name}` : name;
}

interface DetectOptions {
  /** The last TAIL_BYTES of the file (VHD footer). */
  tail?: Buffer;
  formatHint?: string;
  fileName?: string;
}

/**
 * Tells the format from the first bytes of a file (and its last 512, for fixed VHDs). The
 * hint (hv:format, --format) and then the file extension count only when the content has no
 * signature, and a hint naming a format that always has one is ignored when it is missing.
 * An MBR/GPT boot sector or unknown binary is taken as raw; `details` says why.
 */
export function detectFormat(header: Buffer, opts: DetectOptions = {}): ImageFormatInfo {
  const content = (format: string, details?: string): ImageFormatInfo => ({
    format,
    detectedBy: 'content',
    ...(details ? { details } : {}),
  });

  if (ascii(header, 0, 4) === 'QFI\xfb')
    return header.length >= 8 && header.readUInt32BE(4) === 1 ? content('qcow', 'qcow version 1') : content('qcow2');
  if (ascii(header, 0, 6) === 'LUKS\xba\xbe') return content('luks', 'LUKS encrypted volume');
  if (ascii(header, 0, 16) === 'WithoutFreeSpace' || ascii(header, 0, 16) === 'WithouFreSpacExt')
    return content('parallels');
  if (ascii(header, 0, 22) === 'Bochs Virtual HD Image') return content('bochs');
  if (ascii(header, 0, 21) === '#!/bin/sh\n#V2.0 Format') return content('cloop');
  if (ascii(header, 0, 4) === 'KDMV')
    return content('vmdk', 'VMware sparse extent (monolithicSparse or streamOptimized)');
  if (ascii(header, 0, 4) === 'COWD') return content('vmdk', 'VMware ESX sparse extent');
  if (/^\s*# Disk DescriptorFile/.test(ascii(header, 0, 64)))
    return content('vmdk', 'VMware descriptor file (data in separate extents)');
  if (startsWithBytes(header, 0x40, [0x7f, 0x10, 0xda, 0xbe])) return content('vdi');
  if (ascii(header, 0, 8) === 'vhdxfile') return content('vhdx');
  if (ascii(header, 0, 8) === 'conectix') return content('vpc', 'dynamic VHD');
  if (opts.tail && opts.tail.length >= 512 && ascii(opts.tail, opts.tail.length - 512, 8) === 'conectix') {
    return content('vpc', 'fixed VHD (footer in the last 512 bytes)');
  }
  if (ascii(header, 0, 4) === 'QED\0') return content('qed');
  if (opts.tail && opts.tail.length >= 512 && ascii(opts.tail, opts.tail.length - 512, 4) === 'koly')
    return content('dmg', 'Apple disk image (koly trailer)');
  if (startsWithBytes(header, 0, [0x1f, 0x8b])) return content('gz');
  if (ascii(header, 0, 3) === 'BZh' && header[3] >= 0x31 && header[3] <= 0x39) return content('bz2');
  if (startsWithBytes(header, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return content('xz');
  if (ascii(header, 0, 4) === 'PK\x03\x04' || ascii(header, 0, 4) === 'PK\x05\x06') return content('zip');
  if (ascii(header, 257, 5) === 'ustar') {
    const first = firstTarEntryName(header) ?? '';
    return /\.ovf$/i.test(first) ? content('ova', `OVF descriptor ${first} first`) : content('tar');
  }
  if (ascii(header, 0x8001, 5) === 'CD001') return content('iso');

  const bootSector =
    ascii(header, 512, 8) === 'EFI PART' ? 'GPT' : startsWithBytes(header, 510, [0x55, 0xaa]) ? 'MBR' : undefined;
  const ignored: string[] = [];
  const fromText = (value: string | undefined, by: 'hint' | 'extension'): ImageFormatInfo | undefined => {
    const format = by === 'hint' ? normaliseFormat(value) : normaliseFormat(fileExtension(value));
    if (!format) return undefined;
    if (SIGNED_FORMATS.has(format)) {
      ignored.push(`${by} '${value}' ignored: no ${format} signature`);
      return undefined;
    }
    return {
      format,
      detectedBy: by,
      details: `no format signature; ${by === 'hint' ? 'format hint' : 'file name'} '${value}' says ${format}`,
    };
  };
  const byText = fromText(opts.formatHint, 'hint') ?? fromText(opts.fileName, 'extension');
  if (byText) return byText;
  const why = bootSector ? `${bootSector} boot sector, no image-format signature` : 'no known format signature';
  return content('raw', [`${why}; taken as raw`, ...ignored].join('; '));
}

/** Reads just the bytes detectFormat needs: the header and the last 512 bytes. */
export async function readSignatureBytes(file: string): Promise<{ header: Buffer; tail: Buffer; size: number }> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const header = Buffer.alloc(Math.min(HEADER_BYTES, size));
    if (header.length) await fh.read(header, 0, header.length, 0);
    const tail = Buffer.alloc(Math.min(TAIL_BYTES, size));
    if (tail.length) await fh.read(tail, 0, tail.length, size - tail.length);
    return { header, tail, size };
  } finally {
    await fh.close();
  }
}

// ---- is it one self-contained disk image? ----

/** A name found inside an image (a backing file, an extent), made safe to show: printable, bounded. */
function shown(name: string): string {
  const clean = name.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}

const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
const QCOW2_KNOWN_INCOMPAT = 0x1fn;
const QCOW2_EXT_DATA_FILE = 0x44415441;
const QCOW2_EXT_CRYPTO = 0x0537be77;

/** Why a qcow2 header names another file or needs a key; undefined when it is self-contained. */
export function qcow2HeaderProblem(header: Buffer): string | undefined {
  if (header.length < 72) return 'its qcow2 header is truncated';
  const version = header.readUInt32BE(4);
  if (version !== 2 && version !== 3) return `qcow2 version ${version} is not supported`;
  const backingOffset = Number(header.readBigUInt64BE(8));
  if (backingOffset !== 0) {
    const size = header.readUInt32BE(16);
    const name =
      backingOffset + size <= header.length
        ? header.toString('latin1', backingOffset, backingOffset + size)
        : '(name beyond the header)';
    return `it refers to a backing file (${shown(name)})`;
  }
  const crypt = header.readUInt32BE(32);
  if (crypt !== 0)
    return `it is encrypted (${crypt === 1 ? 'AES' : crypt === 2 ? 'LUKS' : `method ${crypt}`}); encrypted images need a key we do not have`;
  let extensionsAt = 72;
  if (version === 3) {
    if (header.length < 104) return 'its qcow2 header is truncated';
    const incompatible = header.readBigUInt64BE(72);
    if (incompatible & QCOW2_INCOMPAT_DATA_FILE) return 'its data lives in an external data file (qcow2 data_file)';
    if (incompatible & ~QCOW2_KNOWN_INCOMPAT)
      return `it uses unknown incompatible qcow2 features (0x${incompatible.toString(16)})`;
    extensionsAt = header.readUInt32BE(100);
  }
  for (let at = extensionsAt; ;) {
    if (at + 8 > header.length) return 'its qcow2 header extensions run past the first 68 KiB';
    const type = header.readUInt32BE(at);
    const length = header.readUInt32BE(at + 4);
    if (type === 0) return undefined;
    if (type === QCOW2_EXT_DATA_FILE) {
      return `it names an external data file (${shown(header.toString('latin1', at + 8, Math.min(header.length, at + 8 + length)))})`;
    }
    if (type === QCOW2_EXT_CRYPTO) return 'it carries an encryption header; encrypted images need a key we do not have';
    at += 8 + Math.ceil(length / 8) * 8;
  }
}

/** QED: bit 0 of the features says "has a backing file". */
function qedHeaderProblem(header: Buffer): string | undefined {
  if (header.length < 64) return 'its QED header is truncated';
  if (header.readBigUInt64LE(16) & 1n) {
    const offset = header.readUInt32LE(56);
    const size = header.readUInt32LE(60);
    const name =
      offset + size <= header.length ? header.toString('latin1', offset, offset + size) : '(name beyond the header)';
    return `it refers to a backing file (${shown(name)})`;
  }
  return undefined;
}

const VMDK_SINGLE_FILE = new Set(['monolithicSparse', 'streamOptimized']);

/**
 * The text descriptor embedded in a VMDK sparse extent: one file only (monolithicSparse or
 * streamOptimized, one extent) and no parent (qemu opens parentFileNameHint as a backing file).
 */
export function vmdkDescriptorProblem(descriptor: string): string | undefined {
  const value = (key: string) => new RegExp(`^\\s*${key}\\s*=\\s*"?([^"\\r\\n]*)"?`, 'm').exec(descriptor)?.[1];
  const createType = value('createType');
  if (createType !== undefined && !VMDK_SINGLE_FILE.has(createType)) {
    return `it is a VMDK of type '${shown(createType)}', whose data lives in several files; only monolithicSparse and streamOptimized are accepted`;
  }
  const parent = value('parentFileNameHint');
  if (parent) return `it refers to a parent disk (${shown(parent)})`;
  const extents = descriptor.split(/\r?\n/).filter((line) => /^\s*(RW|RDONLY|NOACCESS)\s+\d+/.test(line));
  if (extents.length > 1) return `its descriptor lists ${extents.length} extents; only single-file VMDKs are accepted`;
  return undefined;
}

/** Where a VMDK sparse extent keeps its embedded descriptor (bytes), or undefined when it has none. */
function vmdkDescriptorRange(header: Buffer): { offset: number; length: number } | undefined {
  if (header.length < 44) return undefined;
  const sector = Number(header.readBigUInt64LE(28));
  const sectors = Number(header.readBigUInt64LE(36));
  if (!sector || !sectors) return undefined;
  return { offset: sector * 512, length: Math.min(sectors * 512, 1024 * 1024) };
}

/**
 * Per-format checks on the first bytes (and the embedded VMDK descriptor), before qemu-img
 * opens the file at all: opening an image with an external data file already opens that file.
 */
export function formatProblem(
  format: string,
  header: Buffer,
  opts: { tail?: Buffer; vmdkDescriptor?: string } = {},
): string | undefined {
  if (!ACCEPTED_FORMATS.has(format)) {
    return `format '${format}' is not accepted (accepted: ${[...ACCEPTED_FORMATS].join(', ')})`;
  }
  switch (format) {
    case 'qcow2':
      return qcow2HeaderProblem(header);
    case 'qed':
      return qedHeaderProblem(header);
    case 'vmdk':
      if (ascii(header, 0, 4) === 'COWD')
        return 'it is a VMware ESX sparse extent (COWD), one part of a multi-file VMDK';
      if (ascii(header, 0, 4) !== 'KDMV')
        return 'it is a VMDK descriptor whose data lives in other files; only single-file VMDKs are accepted';
      return opts.vmdkDescriptor === undefined ? undefined : vmdkDescriptorProblem(opts.vmdkDescriptor);
    case 'vpc': {
      // The footer: a copy at 0 for dynamic disks, the last 512 bytes always. Type 4 is a differencing disk.
      const footer = ascii(header, 0, 8) === 'conectix' ? header : opts.tail;
      if (footer && footer.length >= 64 && footer.readUInt32BE(60) === 4)
        return 'it is a differencing VHD, which needs its parent disk';
      return undefined;
    }
    case 'vdi': {
      if (header.length < 0x50) return 'its VDI header is truncated';
      const type = header.readUInt32LE(0x4c);
      if (type !== 1 && type !== 2)
        return `it is a VDI of type ${type} (${type === 4 ? 'differencing' : type === 3 ? 'undo' : 'unknown'}); only normal and fixed VDIs are accepted`;
      return undefined;
    }
    default:
      return undefined;
  }
}

// ---- is a "raw" file a disk at all? ----

const textByte = (b: number) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b !== 0x7f);

/** Names what a file is when it is plainly not a disk: a web page, JSON, XML, text. */
export function describeNonDisk(header: Buffer): string | undefined {
  const start = header.subarray(0, 4096);
  let text = start.toString('utf8').replace(/^\uFEFF/, '');
  const trimmed = text.trimStart();
  if (/^(<!doctype html|<html|<head|<body)/i.test(trimmed) || (/^</.test(trimmed) && /<(html|body)[\s>]/i.test(text))) {
    const title = /<title[^>]*>([^<]*)/i.exec(header.toString('utf8'))?.[1]?.trim().replace(/\s+/g, ' ');
    return `an HTML page${title ? ` (title '${shown(title.slice(0, 80))}')` : ''}`;
  }
  if (/^<\?xml/i.test(trimmed) || /^<[A-Za-z][\w:.-]*[\s>/]/.test(trimmed)) {
    const root = /<([A-Za-z][\w:.-]*)[\s>/]/.exec(trimmed.replace(/^<\?xml[^>]*>\s*(<!--[\s\S]*?-->\s*)*/i, ''))?.[1];
    return `an XML document${root ? ` (root element <${shown(root)}>)` : ''}`;
  }
  if (/^[{[]\s*["{[\]}0-9-]/.test(trimmed) || /^[{[]\s*$/.test(trimmed)) return 'a JSON document';
  if (trimmed.startsWith('%PDF-')) return 'a PDF document';
  if (trimmed.startsWith('-----BEGIN')) return 'a PEM file (keys or certificates)';
  if (/^MIME-Version:/i.test(trimmed)) return 'a MIME message (e.g. a signed image list)';
  if (start.length && start.every(textByte)) {
    text = trimmed.split(/\r?\n/)[0] ?? '';
    return `a text file${text ? ` (first line '${shown(text.slice(0, 60))}')` : ''}`;
  }
  return undefined;
}

/** A partition table, or a filesystem or volume signature at its usual place on a bare disk. */
function diskSignature(header: Buffer): string | undefined {
  if (ascii(header, 512, 8) === 'EFI PART' || ascii(header, 4096, 8) === 'EFI PART') return 'GPT partition table';
  if (startsWithBytes(header, 510, [0x55, 0xaa])) return 'MBR boot sector';
  if (startsWithBytes(header, 1080, [0x53, 0xef])) return 'ext2/3/4 filesystem';
  if (ascii(header, 0, 4) === 'XFSB') return 'XFS filesystem';
  if (ascii(header, 0x10040, 8) === '_BHRfS_M') return 'btrfs filesystem';
  for (let sector = 0; sector < 4; sector++)
    if (ascii(header, sector * 512, 8) === 'LABELONE') return 'LVM physical volume';
  return undefined;
}

/**
 * Why a file taken as raw is not a disk image, or undefined when it looks like one: its size
 * is a multiple of 512 and it starts with a partition table or a known filesystem. A web page
 * or an API error served with 200 must never become an image.
 */
export function rawDiskProblem(header: Buffer, size: number): string | undefined {
  if (diskSignature(header) && size % 512 === 0) return undefined;
  const looks = describeNonDisk(header);
  if (looks) return `it looks like ${looks}`;
  if (size % 512 !== 0) return `its size (${size} bytes) is not a multiple of 512`;
  if (header.every((b) => b === 0))
    return `its first ${header.length} bytes are all zero: no partition table or filesystem`;
  return 'it has no partition table (MBR or GPT) and no known filesystem signature (ext2/3/4, XFS, btrfs, LVM)';
}

// ---- qemu-img ----

export interface QemuImgInfo {
  format: string;
  virtualSize: number;
  actualSize?: number;
  backingFile?: string;
  /** Files a VMDK descriptor points to. */
  extents: string[];
  dataFile?: string;
  encrypted: boolean;
}

/**
 * How qemu-img opens an image we read: the driver named (never probed), the protocol fixed to
 * a plain local file (no json:, nbd:, http: in the name can mean anything), and no backing
 * file. Given as a json: filename because `--image-opts` wants commas in the path doubled.
 */
export function qemuImageSpec(file: string, format: string): string {
  return `json:${JSON.stringify({ driver: format, file: { driver: 'file', filename: path.resolve(file) }, backing: null })}`;
}

interface QemuInfoJson {
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  encrypted?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'format-specific'?: {
    type?: string;
    data?: { extents?: Array<{ filename?: string }>; 'data-file'?: string; encrypt?: unknown };
  };
}

function parseQemuImgInfo(json: QemuInfoJson): QemuImgInfo {
  const data = json['format-specific']?.data;
  return {
    format: json.format,
    virtualSize: json['virtual-size'],
    actualSize: json['actual-size'],
    backingFile: json['backing-filename'] ?? json['full-backing-filename'],
    extents: (data?.extents ?? []).map((e) => e.filename ?? '').filter(Boolean),
    dataFile: data?.['data-file'],
    encrypted: Boolean(json.encrypted || data?.encrypt),
  };
}

/** What qemu-img says the image needs besides its own file; undefined when nothing. */
export function infoProblem(info: QemuImgInfo, file: string, format: string): string | undefined {
  if (info.format !== format) return `qemu-img reads it as ${info.format}, not ${format}`;
  if (info.backingFile) return `it refers to a backing file (${shown(info.backingFile)})`;
  if (info.dataFile) return `its data lives in an external data file (${shown(info.dataFile)})`;
  if (info.encrypted) return 'it is encrypted; encrypted images need a key we do not have';
  const self = path.resolve(file);
  const foreign = info.extents.filter((e) => path.resolve(path.dirname(self), e) !== self);
  if (foreign.length) return `its data lives in other files (${foreign.map(shown).join(', ')})`;
  return undefined;
}

/**
 * `qemu-img info --output=json` on our json: spec (explicit driver, plain file, no backing).
 * A failure to read is the image's fault (permanent); a kill or timeout is not.
 */
async function qemuImgInfo(
  file: string,
  format: string,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<QemuImgInfo> {
  const [command, args] = guarded('qemu-img', ['info', '--output=json', qemuImageSpec(file, format)]);
  const result = await execa(command, args, {
    reject: false,
    timeout: opts.timeoutMs ?? 60_000,
    cancelSignal: opts.signal,
    stdin: 'ignore',
  });
  if (result.exitCode !== 0) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (result.timedOut || result.isCanceled || result.signal || result.exitCode === undefined) {
      throw new ToolError(
        `qemu-img info ${path.basename(file)} did not finish: ${result.signal ?? (result.timedOut ? 'timeout' : result.shortMessage)}`,
        { exitCode: result.exitCode },
      );
    }
    const message = String(result.stderr).trim().split('\n').pop() || `exit code ${result.exitCode}`;
    throw new ImageIntegrityError(
      `qemu-img cannot read ${path.basename(file)} as ${format}: ${message.replace(/json:\{.*\}/, path.basename(file))}`,
    );
  }
  return parseQemuImgInfo(JSON.parse(String(result.stdout)) as QemuInfoJson);
}

async function readRange(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

interface CheckedImage {
  format: string;
  virtualSize: number;
  /** What makes a raw file a disk (partition table, filesystem). */
  signature?: string;
}

/**
 * Checks that `file` is an accepted disk image in `format` that reads nothing but itself, and
 * returns its virtual size. Header checks come first, so qemu-img never opens an image that
 * names another file; qemu-img's own report is checked again after.
 */
export async function checkDiskImage(
  file: string,
  format: string,
  opts: { timeoutMs?: number; signal?: AbortSignal; displayName?: string } = {},
): Promise<CheckedImage> {
  const name = opts.displayName ?? path.basename(file);
  const { header, tail, size } = await readSignatureBytes(file);
  if (format === 'raw') {
    const problem = rawDiskProblem(header, size);
    if (problem) throw new ImageIntegrityError(`${name} is not a disk image: ${problem}`);
    return { format, virtualSize: size, signature: diskSignature(header) };
  }
  let vmdkDescriptor: string | undefined;
  const range = format === 'vmdk' && ascii(header, 0, 4) === 'KDMV' ? vmdkDescriptorRange(header) : undefined;
  if (range)
    vmdkDescriptor = (await readRange(file, range.offset, range.length)).toString('latin1').replace(/\0.*$/s, '');
  const problem = formatProblem(format, header, { tail, vmdkDescriptor });
  if (problem) throw new ImageIntegrityError(`${name} refused: ${problem}`);
  const info = await qemuImgInfo(file, format, opts);
  const after = infoProblem(info, file, format);
  if (after) throw new ImageIntegrityError(`${name} refused: ${after}`);
  return { format, virtualSize: info.virtualSize };
}

/**
 * Content first (never qemu-img's probe); the hint and then the extension only for content
 * without a signature. Disk images are then checked to be accepted, self-contained
 * (checkDiskImage) and, for raw, to look like a disk.
 */
export async function inspectFile(
  input: InspectInput,
  opts: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<ImageFormatInfo> {
  const { header, tail, size } = await readSignatureBytes(input.path);
  const name = input.fileName ?? path.basename(input.path);
  if (size === 0) throw new ImageIntegrityError(`${name} is empty (0 bytes)`);
  const detected = detectFormat(header, { tail, formatHint: input.formatHint, fileName: input.fileName });
  if (!DISK_FORMATS.has(detected.format)) return detected;
  if (!ACCEPTED_FORMATS.has(detected.format)) {
    throw new ImageIntegrityError(
      `${name} refused: ${formatProblem(detected.format, header)}${detected.details ? ` (${detected.details})` : ''}`,
    );
  }
  const checked = await checkDiskImage(input.path, detected.format, { ...opts, displayName: name });
  return { ...detected, virtualSize: checked.virtualSize };
}

/** The inspect step: `inspectFile` within the worker's tool time limit, stopped when the activity is cancelled. */
export function inspectImage({ config }: ActivityDeps, input: InspectInput): Promise<ImageFormatInfo> {
  return inspectFile(input, { timeoutMs: config.worker.toolTimeoutMs, signal: cancellationSignal() });
}
