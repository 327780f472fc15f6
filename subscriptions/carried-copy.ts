/**
 * What a sync run carries of the list it accepted to the next run (the schedule's last completion
 * result), bounded whatever the list's size: the list's metadata (for the conditional request and
 * the 304 re-check), its invalid entries (the first MAX_NAMED), and for every image two 8-byte
 * digests — of its id and of its id and revision — and whether the list called it expired or kept
 * it (a read that failed). 17 bytes an image: 5,000 images are 113 KB of base64, where the images
 * themselves were 4 MB. The cloud is the truth about what is registered: the digests only say what
 * the list named, so a run can tell `new` from `updated` and `missing-from-cloud`, and see on a 304
 * whether the cloud still is what the list wants. Pure: workflow code may use it.
 */
import type { CloudImage, CloudInventory } from '../clouds/target.js';
import type { ImageEvent } from '../core/event.js';
import { imageIdentity, type AcceptedList, type ListedImage } from '../core/workflow-contract.js';

/** How many entries of a category (registered, expired, invalid…) a summary or a carried copy names; the rest are counted. */
export const MAX_NAMED = 100;

const RECORD_BYTES = 17;
const EXPIRED = 1;
const KEPT = 2;

/** FNV-1a 64-bit of the UTF-8 bytes, as 16 hex digits (core/workflow-contract.ts shortDigest, without BigInt). */
export function digest64(value: string): string {
  // The 64-bit hash in four 16-bit limbs, least significant first; the prime is 2^40 + 0x1b3.
  let h0 = 0x2325;
  let h1 = 0x8422;
  let h2 = 0x9ce4;
  let h3 = 0xcbf2;
  for (const byte of new TextEncoder().encode(value)) {
    h0 ^= byte;
    // h × 0x1b3 + h × 2^40 (mod 2^64), limb by limb with carries: h × 2^40 adds h0 × 2^8 to limb 2 and h1 × 2^8 to limb 3.
    const t0 = h0 * 0x1b3;
    const t1 = h1 * 0x1b3 + (t0 >>> 16);
    const t2 = h2 * 0x1b3 + (h0 << 8) + (t1 >>> 16);
    const t3 = h3 * 0x1b3 + (h1 << 8) + (t2 >>> 16);
    h0 = t0 & 0xffff;
    h1 = t1 & 0xffff;
    h2 = t2 & 0xffff;
    h3 = t3 & 0xffff;
  }
  return [h3, h2, h1, h0].map((l) => l.toString(16).padStart(4, '0')).join('');
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function toBase64(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]!;
    out += i + 1 < bytes.length ? B64[(n >> 6) & 63]! : '=';
    out += i + 2 < bytes.length ? B64[n & 63]! : '=';
  }
  return out;
}

function fromBase64(text: string): Uint8Array {
  const clean = text.replace(/=+$/, '');
  const bytes = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let n = 0;
  let bits = 0;
  let at = 0;
  for (const c of clean) {
    const v = B64.indexOf(c);
    if (v < 0) throw new Error('the carried copy of the list is not base64');
    n = (n << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes[at++] = (n >> bits) & 0xff;
    }
  }
  return bytes;
}

function hexBytes(hex: string, into: Uint8Array, at: number): void {
  for (let i = 0; i < 8; i++) into[at + i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
}

function bytesHex(from: Uint8Array, at: number): string {
  let out = '';
  for (let i = 0; i < 8; i++) out += from[at + i]!.toString(16).padStart(2, '0');
  return out;
}

/** The digest of an image id (as its identity stores it: imageIdentity). */
export const idDigest = (imageId: string): string => digest64(imageId);
/** The digest of one revision of an image. */
export const revisionDigest = (imageId: string, revision: string): string => digest64(`${imageId}\u0000${revision}`);

/** What the digests of a carried copy say, as sets of digests. */
export interface ListDigests {
  /** Images the list named (any state). */
  ids: Set<string>;
  /** Revisions the list wanted (named, not expired, not kept). */
  wanted: Set<string>;
  /** Every revision the list named. */
  named: Set<string>;
  /** Images whose read failed (invalid entries, unread): their cloud images stay. */
  kept: Set<string>;
  count: number;
}

/** The digests of a list's images, and of the ids its read could not take (kept). */
export function encodeDigests(images: readonly ListedImage[], keep: readonly string[] = []): string {
  const bytes = new Uint8Array((images.length + keep.length) * RECORD_BYTES);
  let at = 0;
  for (const image of images) {
    const { imageId, revision } = imageIdentity(image.event);
    hexBytes(idDigest(imageId), bytes, at);
    hexBytes(revisionDigest(imageId, revision), bytes, at + 8);
    bytes[at + 16] = image.expired ? EXPIRED : 0;
    at += RECORD_BYTES;
  }
  for (const raw of keep) {
    const imageId = imageIdentity({ imageId: raw } as ListedImage['event']).imageId;
    hexBytes(idDigest(imageId), bytes, at);
    bytes[at + 16] = KEPT;
    at += RECORD_BYTES;
  }
  return toBase64(bytes);
}

export function decodeDigests(encoded: string): ListDigests {
  const bytes = fromBase64(encoded);
  const digests: ListDigests = { ids: new Set(), wanted: new Set(), named: new Set(), kept: new Set(), count: 0 };
  for (let at = 0; at + RECORD_BYTES <= bytes.length; at += RECORD_BYTES) {
    const id = bytesHex(bytes, at);
    const flags = bytes[at + 16]!;
    if (flags & KEPT) {
      digests.kept.add(id);
      continue;
    }
    const revision = bytesHex(bytes, at + 8);
    digests.ids.add(id);
    digests.named.add(revision);
    if (!(flags & EXPIRED)) digests.wanted.add(revision);
    digests.count++;
  }
  return digests;
}

/** Up to this size (JSON) a list's images are carried themselves, as before there were digests. */
export const SMALL_COPY_BYTES = 64 * 1024;

/** What an expiry needs of a registration still on its way: its identity and names, never its URL or credentials. */
function slim(event: ImageEvent): ImageEvent {
  const kept: ImageEvent = { origin: event.origin, imageListId: event.imageListId, imageId: event.imageId, extra: {} };
  for (const key of ['vo', 'title', 'version', 'checksumSha512', 'checksumSha256'] as const)
    if (event[key] !== undefined) kept[key] = event[key];
  return kept;
}

/**
 * The copy of `accepted` the next run gets: its metadata and at most MAX_NAMED of its invalid
 * entries (`invalidCount` counts them all); its images themselves while they are small
 * (SMALL_COPY_BYTES) or when the source reads against them (`keepImages`: a registry's tags);
 * beyond, their digests, the ids kept (`keep`) and — when there are at most MAX_NAMED — the events
 * this run delivered for registration (`pending`), so the next run can still cancel one that is
 * on its way when the list drops it (past that, a dropped registration lands and the next run
 * expires it from the cloud's side).
 */
export function carriedCopy(
  accepted: AcceptedList,
  opts: { keep?: readonly string[]; incomplete?: boolean; keepImages: boolean; pending?: readonly ImageEvent[] },
): AcceptedList {
  const {
    images,
    invalid,
    digests: _digests,
    pending: _pending,
    imageCount: _count,
    incomplete: _incomplete,
    ...metadata
  } = accepted;
  const copy: AcceptedList = { ...metadata, images };
  if (invalid?.length) {
    copy.invalid = invalid.slice(0, MAX_NAMED);
    if (invalid.length > MAX_NAMED) copy.invalidCount = invalid.length;
  }
  if (opts.keepImages || JSON.stringify(images).length <= SMALL_COPY_BYTES) return copy;
  copy.images = [];
  copy.digests = encodeDigests(images, opts.keep);
  copy.imageCount = images.length;
  if (opts.incomplete) copy.incomplete = true;
  if (opts.pending?.length && opts.pending.length <= MAX_NAMED) copy.pending = opts.pending.map(slim);
  return copy;
}

/**
 * Whether the cloud is what the carried copy's list wants, so that a run answered 304 has nothing
 * to deliver: every revision the list wants is in the cloud, and nothing the list does not want
 * (another revision, an image it removed or called expired) is live there — unless its image is
 * kept (its read failed) or the read was incomplete and it is an image the list does not name.
 * When this says no, the run reads the list again to plan from its images.
 */
export function cloudMatches(
  digests: ListDigests,
  cloud: readonly CloudImage[],
  expireAction: CloudInventory['expireAction'],
  incomplete: boolean,
): boolean {
  const inCloud = new Set(cloud.map((c) => revisionDigest(c.imageId, c.revision)));
  for (const wanted of digests.wanted) if (!inCloud.has(wanted)) return false;
  for (const image of cloud) {
    if (!image.isPublic && expireAction !== 'unregister') continue;
    if (digests.wanted.has(revisionDigest(image.imageId, image.revision))) continue;
    const id = idDigest(image.imageId);
    if (digests.kept.has(id)) continue;
    if (incomplete && !digests.ids.has(id)) continue;
    return false;
  }
  return true;
}
