import { open } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { ImageIntegrityError, ToolError } from '../core/errors.js';
import type { ImageFormatInfo, InspectInput } from './types.js';

/** Bytes read from the start of a file: enough for the ISO 9660 volume descriptor at 0x8001. */
export const HEADER_BYTES = 36 * 1024;
/** Bytes read from the end: the VHD footer. */
export const TAIL_BYTES = 512;

/** Formats qemu-img reads as disk images; everything else here is a wrapper or not a disk. */
export const DISK_FORMATS = new Set(['raw', 'qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx', 'qed', 'qcow', 'parallels', 'dmg', 'cloop', 'bochs']);
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

export interface DetectOptions {
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
  const content = (format: string, details?: string): ImageFormatInfo => ({ format, detectedBy: 'content', ...(details ? { details } : {}) });

  if (ascii(header, 0, 4) === 'QFI\xfb') return content('qcow2');
  if (ascii(header, 0, 4) === 'KDMV') return content('vmdk', 'VMware sparse extent (monolithicSparse or streamOptimized)');
  if (ascii(header, 0, 4) === 'COWD') return content('vmdk', 'VMware ESX sparse extent');
  if (/^\s*# Disk DescriptorFile/.test(ascii(header, 0, 64))) return content('vmdk', 'VMware descriptor file (data in separate extents)');
  if (startsWithBytes(header, 0x40, [0x7f, 0x10, 0xda, 0xbe])) return content('vdi');
  if (ascii(header, 0, 8) === 'vhdxfile') return content('vhdx');
  if (ascii(header, 0, 8) === 'conectix') return content('vpc', 'dynamic VHD');
  if (opts.tail && opts.tail.length >= 512 && ascii(opts.tail, opts.tail.length - 512, 8) === 'conectix') {
    return content('vpc', 'fixed VHD (footer in the last 512 bytes)');
  }
  if (ascii(header, 0, 4) === 'QED\0') return content('qed');
  if (startsWithBytes(header, 0, [0x1f, 0x8b])) return content('gz');
  if (ascii(header, 0, 3) === 'BZh' && header[3] >= 0x31 && header[3] <= 0x39) return content('bz2');
  if (startsWithBytes(header, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return content('xz');
  if (ascii(header, 0, 4) === 'PK\x03\x04' || ascii(header, 0, 4) === 'PK\x05\x06') return content('zip');
  if (ascii(header, 257, 5) === 'ustar') {
    const first = firstTarEntryName(header) ?? '';
    return /\.ovf$/i.test(first) ? content('ova', `OVF descriptor ${first} first`) : content('tar');
  }
  if (ascii(header, 0x8001, 5) === 'CD001') return content('iso');

  const bootSector = ascii(header, 512, 8) === 'EFI PART' ? 'GPT' : startsWithBytes(header, 510, [0x55, 0xaa]) ? 'MBR' : undefined;
  const ignored: string[] = [];
  const fromText = (value: string | undefined, by: 'hint' | 'extension'): ImageFormatInfo | undefined => {
    const format = by === 'hint' ? normaliseFormat(value) : normaliseFormat(fileExtension(value));
    if (!format) return undefined;
    if (SIGNED_FORMATS.has(format)) {
      ignored.push(`${by} '${value}' ignored: no ${format} signature`);
      return undefined;
    }
    return { format, detectedBy: by, details: `no format signature; ${by === 'hint' ? 'format hint' : 'file name'} '${value}' says ${format}` };
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

export interface QemuImgInfo {
  format: string;
  virtualSize: number;
  actualSize?: number;
  backingFile?: string;
  /** Files a VMDK descriptor points to. */
  extents: string[];
}

/**
 * `qemu-img info --output=json`. With a format, no probing happens; qemu-img opens images
 * for info without their backing files.
 */
export async function qemuImgInfo(file: string, format?: string, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<QemuImgInfo> {
  const args = ['info', '--output=json', ...(format ? ['-f', format] : []), '--', file];
  const result = await execa('qemu-img', args, { reject: false, timeout: opts.timeoutMs ?? 60_000, cancelSignal: opts.signal });
  if (result.exitCode !== 0) {
    const message = String(result.stderr).trim().split('\n').pop() || `exit code ${result.exitCode}`;
    if (result.timedOut || result.isCanceled || result.signal) {
      throw new ToolError(`qemu-img info ${path.basename(file)} did not finish: ${result.signal ?? 'timeout'}`, { exitCode: result.exitCode });
    }
    throw new ImageIntegrityError(`qemu-img cannot read ${path.basename(file)}${format ? ` as ${format}` : ''}: ${message}`);
  }
  const json = JSON.parse(String(result.stdout)) as {
    format: string;
    'virtual-size': number;
    'actual-size'?: number;
    'backing-filename'?: string;
    'format-specific'?: { data?: { extents?: Array<{ filename?: string }> } };
  };
  return {
    format: json.format,
    virtualSize: json['virtual-size'],
    actualSize: json['actual-size'],
    backingFile: json['backing-filename'],
    extents: (json['format-specific']?.data?.extents ?? []).map((e) => e.filename ?? '').filter(Boolean),
  };
}

/**
 * Content first; for disk images qemu-img confirms the format and gives the virtual size.
 * When the content has no signature, qemu-img's probe may still know the format (parallels,
 * dmg...), which beats the hint and the extension.
 */
export async function inspectImage(input: InspectInput, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ImageFormatInfo> {
  const { header, tail, size } = await readSignatureBytes(input.path);
  if (size === 0) throw new ImageIntegrityError(`${input.fileName ?? path.basename(input.path)} is empty (0 bytes)`);
  const detected = detectFormat(header, { tail, formatHint: input.formatHint, fileName: input.fileName });
  if (!DISK_FORMATS.has(detected.format)) return detected;
  if (detected.detectedBy === 'content' && detected.format !== 'raw') {
    const info = await qemuImgInfo(input.path, detected.format, opts);
    return { ...detected, virtualSize: info.virtualSize };
  }
  const probed = await qemuImgInfo(input.path, undefined, opts);
  if (probed.format !== 'raw' && DISK_FORMATS.has(probed.format)) {
    return { format: probed.format, detectedBy: 'qemu-img', virtualSize: probed.virtualSize, details: `qemu-img probe: ${probed.format}` };
  }
  return { ...detected, virtualSize: probed.virtualSize };
}
