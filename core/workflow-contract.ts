/**
 * What the workflows, their starters (bridge, CLI) and the worker agree on: names, inputs,
 * ids and search attributes. Workflow code imports this, so it must stay free of Node
 * built-ins and I/O (only @temporalio/common, which is workflow-safe, and types).
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { ImageEvent } from './event.js';

export const REGISTER_WORKFLOW = 'registerImage';
export const EXPIRE_WORKFLOW = 'expireImage';

/** The original handlers (`-handler`), by the names a site may have in its scripts. */
export const HANDLERS = ['registerImage', 'JustLogHandler', 'ThrowingHandler'] as const;
export type HandlerName = (typeof HANDLERS)[number];

/** Per-event choices. Names only: a credential is resolved by the worker from its own config. */
export interface RegistrationOptions {
  handler?: HandlerName;
  /** kamaki cloud name from ~/.kamakirc; the worker's configured default when absent. */
  kamakiCloud?: string;
  /** Disable TLS verification for this image's download (logged when used). */
  insecureSsl?: boolean;
  osfamily?: string;
  users?: string;
  /** Format hint (`-format`), used only when the content cannot tell. */
  formatHint?: string;
  /** Name of a credential in the worker's `security.credentials` to send with the download. */
  credentialName?: string;
}

export interface RegisterImageInput {
  event: ImageEvent;
  options: RegistrationOptions;
}

export interface RegisterImageResult {
  handler: HandlerName;
  /** Synnefo image id, when the handler registers. */
  imageId?: string;
  /** True when an image with the same identity already existed and was reused. */
  reused?: boolean;
  name?: string;
  location?: string;
  format?: string;
  properties?: Record<string, string>;
}

export interface ExpireImageInput {
  event: ImageEvent;
  options: RegistrationOptions;
}

export interface ExpireImageResult {
  action: 'make-private' | 'unregister';
  imageIds: string[];
}

/** Failure types the workflow acts on: wait for disk space, or give up on this host's disk. */
export const OUT_OF_SPACE = 'OutOfSpaceError';
export const DISK_TOO_SMALL = 'DiskTooSmallError';
export interface OutOfSpaceDetails {
  neededBytes: number;
  freeBytes: number;
}

/** The stages a registration goes through, shown as the `ImageStage` search attribute. */
export const STAGES = [
  'queued',
  'acquiring',
  'inspecting',
  'converting',
  'preparing',
  'registering',
  'expiring',
  'done',
  'failed',
] as const;
export type Stage = (typeof STAGES)[number];

/** Progress, readable with the `progress` query while the workflow runs. */
export interface Progress {
  stage: Stage;
  step?: string;
  bytesDone?: number;
  bytesTotal?: number;
}
export const PROGRESS_QUERY = 'progress';

export const SA_IMAGE_ID = defineSearchAttributeKey('ImageIdentifier', SearchAttributeType.KEYWORD);
export const SA_IMAGE_LIST_ID = defineSearchAttributeKey('ImageListIdentifier', SearchAttributeType.KEYWORD);
export const SA_VO = defineSearchAttributeKey('ImageVO', SearchAttributeType.KEYWORD);
export const SA_STAGE = defineSearchAttributeKey('ImageStage', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTE_KEYS = [SA_IMAGE_ID, SA_IMAGE_LIST_ID, SA_VO, SA_STAGE];

/** Name → type, for `temporal operator search-attribute create` and the dev server flags. */
export const SEARCH_ATTRIBUTES: ReadonlyArray<{ name: string; type: 'Keyword' }> = SEARCH_ATTRIBUTE_KEYS.map((key) => ({
  name: key.name,
  type: 'Keyword' as const,
}));

const MAX_PART = 80;
function idPart(value: string | undefined, fallback: string): string {
  const cleaned = (value ?? '').trim().replace(/[^A-Za-z0-9._-]+/g, '_');
  return (cleaned || fallback).slice(0, MAX_PART);
}

/** A short, stable digest of a string (FNV-1a 64-bit, hex), usable in workflow code too. */
export function shortDigest(value: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(value)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash.toString(16).padStart(16, '0');
}

/**
 * The version part of an image's identity: its sha512 when known (the content), else its
 * declared version, else its download location.
 */
function imageRevision(event: ImageEvent): string {
  if (event.checksumSha512) return `sha512-${event.checksumSha512.slice(0, 32)}`;
  if (event.version) return `v-${idPart(event.version, 'none')}`;
  if (event.uri) return `uri-${shortDigest(event.uri)}`;
  return `file-${shortDigest(`${event.cacheDir ?? ''}/${event.filename ?? ''}`)}`;
}

/** `register:<image list>:<image>:<revision>`: repeated events for one image revision share it. */
export function registerWorkflowId(event: ImageEvent): string {
  return ['register', idPart(event.imageListId, 'no-list'), idPart(event.imageId, 'no-id'), imageRevision(event)].join(':');
}

/** `expire:<image list>:<image>:<revision or expired file name>`. */
export function expireWorkflowId(event: ImageEvent): string {
  const revision = event.checksumSha512 ? imageRevision(event) : `f-${idPart(event.filename, 'none')}`;
  return ['expire', idPart(event.imageListId, 'no-list'), idPart(event.imageId, 'no-id'), revision].join(':');
}

/** The identity properties stored on the registered image, used to find it again. */
export const IDENTITY_PROPERTIES = {
  imageListId: 'VMCATCHER_IL_DC_IDENTIFIER',
  imageId: 'VMCATCHER_DC_IDENTIFIER',
  revision: 'VMCATCHER_REVISION',
} as const;

export function imageIdentity(event: ImageEvent): { imageListId: string; imageId: string; revision: string } {
  return { imageListId: idPart(event.imageListId, 'no-list'), imageId: idPart(event.imageId, 'no-id'), revision: imageRevision(event) };
}
