/**
 * What a registry subscription remembers between runs, in a bounded form (the sync carries it in
 * its copy for the next run: subscriptions/carried-copy.ts): the manifest digest each selected tag
 * named (for the next read's conditional requests), and of each image accepted what a later read
 * needs without its event — its tag, manifest, disk and creation time (to refuse a tag moved back
 * to an older image, and to read the accepted image back by digest when it must stay current).
 * Binary records, base64: 40 bytes a tag and about 100 an image, where the images themselves were
 * about 1 KB each. And the project's validator: a digest of every selected tag's manifest, so a
 * read that finds the same can say "not modified" without reading a manifest whole.
 * Worker side only (node:crypto, Buffer): the workflow only carries the strings.
 */
import { createHash } from 'node:crypto';
import type { ImageEvent } from '../core/event.js';
import { CREATED, REF_DIGEST } from './annotations.js';

/** The digest each selected tag named, per image (repository name inside the project) and tag. */
export type RememberedManifests = Record<string, Record<string, string>>;

/** What the copy carries: see RegistryMemory in core/workflow-contract.ts (AcceptedList.registry). */
export interface RegistryMemory {
  /** The manifest digest of each remembered tag. */
  tags: string;
  /** Of each image accepted, an AcceptedManifest. */
  images: string;
}

/** What a later read needs of an image it accepted, when the copy no longer carries its event. */
export interface AcceptedManifest {
  /** The tag it was read from (its hv:version). */
  version: string;
  /** The manifest it was made from (`sha256:<hex>`): where to read it back. */
  manifest: string;
  /** Its disk layer's sha256 (hex). */
  checksumSha256: string;
  /** The manifest's `org.opencontainers.image.created`, as written. */
  created?: string;
}

const KEY_BYTES = 8;
const SHA256_BYTES = 32;
const TAG_RECORD = KEY_BYTES + SHA256_BYTES;
const SHA256 = /^sha256:([0-9a-f]{64})$/;
const HEX64 = /^[0-9a-f]{64}$/;

/** 8 bytes of the sha256 of the parts: the key a record is found by. */
function key(...parts: string[]): Buffer {
  return createHash('sha256').update(parts.join('\u0000')).digest().subarray(0, KEY_BYTES);
}

const keyHex = (...parts: string[]): string => key(...parts).toString('hex');

/** The digests of every remembered tag, 40 bytes each. Entries that are not a sha256 digest are left out. */
export function encodeTags(manifests: RememberedManifests): string {
  const records: Buffer[] = [];
  for (const [imageId, tags] of Object.entries(manifests))
    for (const [tag, digest] of Object.entries(tags)) {
      const hex = SHA256.exec(digest)?.[1];
      if (hex) records.push(key(imageId, tag), Buffer.from(hex, 'hex'));
    }
  return Buffer.concat(records).toString('base64');
}

/** The digest a tag named at the last read, from encodeTags' records. */
export class RememberedTags {
  private readonly digests = new Map<string, string>();

  constructor(encoded: string | undefined) {
    const bytes = Buffer.from(encoded ?? '', 'base64');
    for (let at = 0; at + TAG_RECORD <= bytes.length; at += TAG_RECORD)
      this.digests.set(
        bytes.subarray(at, at + KEY_BYTES).toString('hex'),
        `sha256:${bytes.subarray(at + KEY_BYTES, at + TAG_RECORD).toString('hex')}`,
      );
  }

  digestOf(imageId: string, tag: string): string | undefined {
    return this.digests.get(keyHex(imageId, tag));
  }
}

/** What the copy keeps of an image accepted: none for an event not made from a registry manifest. */
export function acceptedManifestOf(event: ImageEvent): AcceptedManifest | undefined {
  const manifest = event.properties?.[REF_DIGEST];
  if (!event.version || !manifest || !SHA256.test(manifest) || !HEX64.test(event.checksumSha256 ?? ''))
    return undefined;
  const accepted: AcceptedManifest = { version: event.version, manifest, checksumSha256: event.checksumSha256! };
  const created = event.properties?.[CREATED];
  if (created !== undefined) accepted.created = created;
  return accepted;
}

/** A string of at most 255 bytes, length first; undefined when longer. */
function short(text: string): Buffer | undefined {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= 255 ? Buffer.concat([Buffer.from([bytes.length]), bytes]) : undefined;
}

/**
 * The accepted images, each `key(imageId) · manifest · disk · version · created` (the last two
 * length first; a creation time past 255 bytes is left out, as is an image whose tag is).
 */
export function encodeAcceptedImages(images: ReadonlyMap<string, AcceptedManifest>): string {
  const records: Buffer[] = [];
  for (const [imageId, accepted] of images) {
    const version = short(accepted.version);
    if (!version) continue;
    records.push(
      key(imageId),
      Buffer.from(SHA256.exec(accepted.manifest)![1]!, 'hex'),
      Buffer.from(accepted.checksumSha256, 'hex'),
      version,
      short(accepted.created ?? '') ?? Buffer.from([0]),
    );
  }
  return Buffer.concat(records).toString('base64');
}

/** The accepted images of encodeAcceptedImages, found by image id. */
export class AcceptedImages {
  private readonly images = new Map<string, AcceptedManifest>();

  constructor(encoded: string | undefined) {
    const bytes = Buffer.from(encoded ?? '', 'base64');
    const text = (at: number) => bytes.subarray(at + 1, at + 1 + bytes[at]!).toString('utf8');
    for (let at = 0; at + KEY_BYTES + 2 * SHA256_BYTES + 2 <= bytes.length;) {
      const id = bytes.subarray(at, at + KEY_BYTES).toString('hex');
      at += KEY_BYTES;
      const manifest = `sha256:${bytes.subarray(at, at + SHA256_BYTES).toString('hex')}`;
      at += SHA256_BYTES;
      const checksumSha256 = bytes.subarray(at, at + SHA256_BYTES).toString('hex');
      at += SHA256_BYTES;
      const version = text(at);
      at += 1 + bytes[at]!;
      const created = text(at);
      at += 1 + bytes[at]!;
      const accepted: AcceptedManifest = { version, manifest, checksumSha256 };
      if (created !== '') accepted.created = created;
      this.images.set(id, accepted);
    }
  }

  of(imageId: string): AcceptedManifest | undefined {
    return this.images.get(keyHex(imageId));
  }
}

/**
 * The project's validator: a digest of what makes the read's images — the list id, the registry,
 * the VO, and every selected tag with the manifest it names. Equal validators, equal images.
 */
export function projectValidator(
  what: { listId: string; registry: string; vo?: string },
  manifests: RememberedManifests,
): string {
  const hash = createHash('sha256').update(JSON.stringify([what.listId, what.registry, what.vo ?? null]));
  const lines = Object.entries(manifests)
    .flatMap(([imageId, tags]) => Object.entries(tags).map(([tag, digest]) => JSON.stringify([imageId, tag, digest])))
    .sort();
  for (const line of lines) hash.update(`\n${line}`);
  return `registry-manifests:${hash.digest('hex')}`;
}
