import { XMLParser } from 'fast-xml-parser';
import { ImageIntegrityError } from '../core/errors.js';

interface OvfDiskChoice {
  /** The archive member (References/File href) holding the boot disk. */
  href: string;
  /** Other disk files the OVF references, in the order they were ranked. */
  others: string[];
  /** How the choice was made, for the log. */
  reason: string;
}

type Node = Record<string, unknown>;

const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const text = (v: unknown): string | undefined => {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object') return text((v as Node)['#text']);
  return String(v).trim();
};
const num = (v: unknown): number | undefined => {
  const s = text(v);
  return s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined;
};

/** Depth-first search for the first element named `name` (namespace prefixes removed). */
function findFirst(node: unknown, name: string): Node | undefined {
  if (!node || typeof node !== 'object') return undefined;
  for (const [key, value] of Object.entries(node as Node)) {
    if (key === name) return asArray(value as Node | Node[])[0];
    for (const child of asArray(value as unknown)) {
      const found = findFirst(child, name);
      if (found) return found;
    }
  }
  return undefined;
}

/** OVF hardware items of type 17 (disk drive), in CIM's ResourceType numbering. */
const DISK_DRIVE = 17;

/**
 * Chooses the boot disk of an OVA from its OVF descriptor: the disk items of the (first)
 * VirtualSystem, ordered by their controller's address, their address on it and their
 * instance id; their `ovf:/disk/<diskId>` host resource names a DiskSection Disk whose
 * fileRef names a References File. Without hardware items the DiskSection order counts,
 * and without a DiskSection the References order.
 */
export function chooseOvfDisk(ovfXml: string): OvfDiskChoice {
  let doc: unknown;
  try {
    doc = new XMLParser({
      ignoreAttributes: false,
      attributeNamePrefix: '@',
      removeNSPrefix: true,
      parseTagValue: false,
    }).parse(ovfXml);
  } catch (err) {
    throw new ImageIntegrityError(`OVF descriptor is not valid XML: ${(err as Error).message}`);
  }
  const envelope = findFirst(doc, 'Envelope');
  if (!envelope) throw new ImageIntegrityError('OVF descriptor has no Envelope element');

  const files = asArray(findFirst(envelope, 'References')?.File as Node | Node[] | undefined)
    .map((f) => ({ id: text(f['@id']), href: text(f['@href']) }))
    .filter((f): f is { id: string; href: string } => Boolean(f.id && f.href));
  const hrefById = new Map(files.map((f) => [f.id, f.href]));
  const disks = asArray(findFirst(envelope, 'DiskSection')?.Disk as Node | Node[] | undefined)
    .map((d) => ({ diskId: text(d['@diskId']), fileRef: text(d['@fileRef']) }))
    .filter((d): d is { diskId: string; fileRef: string } => Boolean(d.diskId && d.fileRef && hrefById.has(d.fileRef)));
  const hrefByDiskId = new Map(disks.map((d) => [d.diskId, hrefById.get(d.fileRef)!]));

  const hardware = findFirst(findFirst(envelope, 'VirtualSystem') ?? envelope, 'VirtualHardwareSection');
  const items = [
    ...asArray(hardware?.Item as Node | Node[] | undefined),
    ...asArray(hardware?.StorageItem as Node | Node[] | undefined),
  ];
  const addressOfInstance = new Map<string, number>();
  for (const item of items) {
    const id = text(item.InstanceID);
    const address = num(item.Address);
    if (id !== undefined && address !== undefined) addressOfInstance.set(id, address);
  }
  const diskItems = items
    .map((item, index) => {
      const resource = text(item.HostResource) ?? '';
      const match = /(?:^|\/)disk\/(.+)$/.exec(resource);
      return {
        href: match ? hrefByDiskId.get(match[1]) : undefined,
        isDisk: num(item.ResourceType) === DISK_DRIVE,
        key: [
          addressOfInstance.get(text(item.Parent) ?? '') ?? 0,
          num(item.AddressOnParent) ?? Number.MAX_SAFE_INTEGER,
          num(item.InstanceID) ?? Number.MAX_SAFE_INTEGER,
          index,
        ],
      };
    })
    .filter((d): d is { href: string; isDisk: boolean; key: number[] } => d.isDisk && d.href !== undefined)
    .sort((a, b) => a.key.reduce((acc, v, i) => acc || v - b.key[i], 0));

  let ranked: string[];
  let reason: string;
  if (diskItems.length) {
    ranked = diskItems.map((d) => d.href);
    reason = 'first disk drive of the virtual hardware by controller and address';
  } else if (disks.length) {
    ranked = disks.map((d) => hrefByDiskId.get(d.diskId)!);
    reason = 'first disk of the DiskSection';
  } else {
    ranked = files.map((f) => f.href).filter((h) => !/\.(ovf|mf|cert|xml|txt|iso|nvram)$/i.test(h));
    reason = 'first file of References (the OVF describes no disks)';
  }
  const unique = [...new Set(ranked)];
  if (!unique.length) throw new ImageIntegrityError('OVF descriptor references no disk file');
  return { href: unique[0], others: unique.slice(1), reason };
}
