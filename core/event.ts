import { z } from 'zod';
import { InvalidInputError } from './errors.js';

/**
 * The image event: one model for vmcatcher's cache-hook events and for images read from an
 * image list. On the queue it travels as the original flat JSON object of `VMCATCHER_*`
 * names to string values, so old and new producers and consumers mix (a Scala producer with
 * this bridge, or the reverse; docs/image-lists.md "Publishing").
 *
 * This module depends on nothing but zod and core/errors.ts, so workflows can import its types.
 */

/** Event types exactly as vmcatcher emits them (launch.py). */
const EVENT_TYPES = [
  'ProcessPrefix',
  'ExpirePrefix',
  'ExpirePostfix',
  'AvailablePrefix',
  'AvailablePostfix',
  'ProcessPostfix',
  'SubscriptionImageNew',
] as const;
type EventType = (typeof EVENT_TYPES)[number];

/** vmcatcher's README spells it `ExpirePosfix`; accept that too. */
const EVENT_TYPE_ALIASES: Record<string, EventType> = { ExpirePosfix: 'ExpirePostfix' };

/** Field name in the model → the flat `VMCATCHER_*` key. */
export const EVENT_FIELDS = {
  type: 'VMCATCHER_EVENT_TYPE',
  sessionUuid: 'VMCATCHER_EVENT_UUID_SESSION',
  cacheDir: 'VMCATCHER_CACHE_DIR_CACHE',
  downloadDir: 'VMCATCHER_CACHE_DIR_DOWNLOAD',
  expireDir: 'VMCATCHER_CACHE_DIR_EXPIRE',
  filename: 'VMCATCHER_EVENT_FILENAME',
  vo: 'VMCATCHER_EVENT_VO',
  imageListId: 'VMCATCHER_EVENT_IL_DC_IDENTIFIER',
  imageId: 'VMCATCHER_EVENT_DC_IDENTIFIER',
  title: 'VMCATCHER_EVENT_DC_TITLE',
  description: 'VMCATCHER_EVENT_DC_DESCRIPTION',
  uri: 'VMCATCHER_EVENT_HV_URI',
  size: 'VMCATCHER_EVENT_HV_SIZE',
  version: 'VMCATCHER_EVENT_HV_VERSION',
  hypervisor: 'VMCATCHER_EVENT_HV_HYPERVISOR',
  format: 'VMCATCHER_EVENT_HV_FORMAT',
  arch: 'VMCATCHER_EVENT_SL_ARCH',
  checksumSha512: 'VMCATCHER_EVENT_SL_CHECKSUM_SHA512',
  /** Not vmcatcher's: an OCI registry names a layer by its sha256 (oci/). */
  checksumSha256: 'VMCATCHER_EVENT_SL_CHECKSUM_SHA256',
  comments: 'VMCATCHER_EVENT_SL_COMMENTS',
  os: 'VMCATCHER_EVENT_SL_OS',
  osName: 'VMCATCHER_EVENT_SL_OSNAME',
  osVersion: 'VMCATCHER_EVENT_SL_OSVERSION',
  mpUri: 'VMCATCHER_EVENT_AD_MPURI',
} as const;

type EventField = keyof typeof EVENT_FIELDS;

/** Every variable enqueue-from-env copies from the environment. */
export const VMCATCHER_VARIABLES: readonly string[] = Object.values(EVENT_FIELDS);

/** Where an event came from. Not serialised (as in the original). */
export type EventOrigin = 'vmcatcher' | 'image-list' | 'message' | 'command' | 'registry';

/** The origins of the events a subscription's sync delivers (the site's own read of a source it trusts). */
const SUBSCRIPTION_ORIGINS: ReadonlySet<EventOrigin> = new Set(['image-list', 'registry']);

/** Whether the site's own sync of a subscription made the event (its VO is the subscription's, not a publisher's word). */
export function fromSubscription(event: Pick<ImageEvent, 'origin'>): boolean {
  return SUBSCRIPTION_ORIGINS.has(event.origin);
}

const text = z.string().min(1);
const sha512Hex = z
  .string()
  .regex(/^[0-9a-fA-F]{128}$/, 'must be 128 hexadecimal digits (a sha512)')
  .transform((s) => s.toLowerCase());
const sha256Hex = z
  .string()
  .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hexadecimal digits (a sha256)')
  .transform((s) => s.toLowerCase());

export const ImageEventSchema = z.object({
  origin: z.enum(['vmcatcher', 'image-list', 'message', 'command', 'registry']),
  type: z.enum(EVENT_TYPES).optional(),
  sessionUuid: text.optional(),
  cacheDir: text.optional(),
  downloadDir: text.optional(),
  expireDir: text.optional(),
  filename: text.optional(),
  vo: text.optional(),
  imageListId: text.optional(),
  imageId: text.optional(),
  title: text.optional(),
  description: text.optional(),
  uri: text.optional(),
  size: z.number().int().nonnegative().optional(),
  version: text.optional(),
  hypervisor: text.optional(),
  format: text.optional(),
  arch: text.optional(),
  checksumSha512: sha512Hex.optional(),
  checksumSha256: sha256Hex.optional(),
  comments: text.optional(),
  os: text.optional(),
  osName: text.optional(),
  osVersion: text.optional(),
  mpUri: text.optional(),
  /**
   * Properties the source names for the registered image, as the source spells them (an OCI
   * registry's manifest annotations, oci/annotations.ts). Not part of the flat message: they
   * travel in the workflow input of a registry subscription's events.
   */
  properties: z.record(z.string(), z.string()).optional(),
  /** Keys of the flat message this model does not know; kept so a round trip is exact. */
  extra: z.record(z.string(), z.string()).default({}),
});

export type ImageEvent = z.infer<typeof ImageEventSchema>;

/** Why a message is not a valid event: the dead-letter reason an operator filters on. */
export type InvalidEventReason =
  | 'invalid-json'
  | 'not-an-object'
  | 'nested-value'
  | 'bad-event-type'
  | 'missing-key'
  | 'invalid-value'
  | 'credentials-in-url';

/** An event (a queue message, the hook's environment, an image) is not one this service can act on. */
export class InvalidEventError extends InvalidInputError {
  constructor(
    message: string,
    readonly reason: InvalidEventReason,
    /** The flat key that was wrong, for the dead-letter header. */
    readonly key?: string,
  ) {
    super(message);
  }
}

const KEY_TO_FIELD = new Map<string, EventField>(
  Object.entries(EVENT_FIELDS).map(([field, key]) => [key, field as EventField]),
);

function parseEventType(value: string): EventType {
  const type = EVENT_TYPE_ALIASES[value] ?? value;
  if (!(EVENT_TYPES as readonly string[]).includes(type)) {
    throw new InvalidEventError(
      `VMCATCHER_EVENT_TYPE '${value}' is not a vmcatcher event type (expected one of ${EVENT_TYPES.join(', ')})`,
      'bad-event-type',
      EVENT_FIELDS.type,
    );
  }
  return type as EventType;
}

/**
 * Flat `VMCATCHER_*` map → typed event. Empty values count as absent (vmcatcher never sets
 * an empty variable; the original producer could). Unknown keys are kept in `extra`.
 */
export function eventFromFlat(flat: Record<string, unknown>, origin: EventOrigin): ImageEvent {
  const candidate: Record<string, unknown> = { origin, extra: {} };
  const extra: Record<string, string> = {};
  for (const [key, rawValue] of Object.entries(flat)) {
    if (rawValue === null || rawValue === undefined) continue;
    if (typeof rawValue === 'object') {
      throw new InvalidEventError(
        `${key} must be a string, not a nested ${Array.isArray(rawValue) ? 'array' : 'object'}`,
        'nested-value',
        key,
      );
    }
    const value = String(rawValue);
    const field = KEY_TO_FIELD.get(key);
    if (!field) {
      extra[key] = value;
      continue;
    }
    if (value === '') continue;
    if (field === 'type') candidate.type = parseEventType(value);
    else if (field === 'size') {
      if (!/^\d+$/.test(value.trim()))
        throw new InvalidEventError(`${key} '${value}' is not a size in bytes`, 'invalid-value', key);
      candidate.size = Number(value.trim());
    } else candidate[field] = value;
  }
  candidate.extra = extra;
  const result = ImageEventSchema.safeParse(candidate);
  if (!result.success) {
    const issue = result.error.issues[0];
    const field = String(issue.path[0] ?? '');
    const key = (EVENT_FIELDS as Record<string, string>)[field] ?? field;
    throw new InvalidEventError(`${key}: ${issue.message}`, 'invalid-value', key);
  }
  return result.data;
}

/** Typed event → the flat message the original consumers understand. */
export function eventToFlat(event: ImageEvent): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [field, key] of Object.entries(EVENT_FIELDS) as Array<[EventField, string]>) {
    const value = event[field];
    if (value !== undefined) flat[key] = String(value);
  }
  for (const [key, value] of Object.entries(event.extra)) {
    if (!(key in flat)) flat[key] = value;
  }
  return flat;
}

/** Parses a queue message body (UTF-8 JSON object). */
export function eventFromMessageBody(body: Buffer | string): ImageEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch (err) {
    throw new InvalidEventError(`message body is not JSON: ${(err as Error).message}`, 'invalid-json');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new InvalidEventError('message body must be a JSON object of VMCATCHER_* names to strings', 'not-an-object');
  }
  return eventFromFlat(parsed as Record<string, unknown>, 'message');
}

/** Builds the event of a vmcatcher cache hook from the environment it runs in. */
export function eventFromEnvironment(env: NodeJS.ProcessEnv): ImageEvent {
  const flat: Record<string, string> = {};
  for (const key of VMCATCHER_VARIABLES) {
    const value = env[key];
    if (value !== undefined) flat[key] = value;
  }
  return eventFromFlat(flat, 'vmcatcher');
}

type EventAction = 'register' | 'expire' | 'ignore';

/**
 * What the service does with an event. Image-list events carry no type and mean "register";
 * vmcatcher's `AvailablePostfix` means the image sits verified in its cache; `ExpirePostfix`
 * means it was expired. Every other vmcatcher event needs no action.
 */
export function eventAction(event: Pick<ImageEvent, 'type'>): EventAction {
  if (event.type === undefined || event.type === 'AvailablePostfix') return 'register';
  if (event.type === 'ExpirePostfix') return 'expire';
  return 'ignore';
}

/** Checks that an event carries what its action needs; throws InvalidEventError naming the key. */
export function assertActionable(event: ImageEvent): void {
  const action = eventAction(event);
  if (action === 'ignore') return;
  if (!event.imageId)
    throw new InvalidEventError(`${EVENT_FIELDS.imageId} is required`, 'missing-key', EVENT_FIELDS.imageId);
  if (event.uri && /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(event.uri)) {
    // The event becomes a workflow input, kept in Temporal's history: never a credential.
    throw new InvalidEventError(
      `${EVENT_FIELDS.uri} carries credentials in the URL; configure them as a named credential (security.credentials) instead`,
      'credentials-in-url',
      EVENT_FIELDS.uri,
    );
  }
  if (action === 'register') {
    const fromCache = event.type === 'AvailablePostfix' && event.cacheDir && event.filename;
    if (!fromCache && !event.uri) {
      throw new InvalidEventError(
        `${EVENT_FIELDS.uri} is required (or ${EVENT_FIELDS.cacheDir} and ${EVENT_FIELDS.filename} for a vmcatcher event)`,
        'missing-key',
        EVENT_FIELDS.uri,
      );
    }
  }
}

/** Natural order of two `hv:version` strings: numbers compare as numbers (`1.10` > `1.9`). */
export function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true, sensitivity: 'base' });
}
