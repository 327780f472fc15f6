import { z } from 'zod';
import { InvalidInputError } from '../core/errors.js';
import { ImageEventSchema, type ImageEvent } from '../core/event.js';

/**
 * The HEPiX / AppDB image list (vmcatcher-and-synnefo.md §2.2) as typed objects. Parsed
 * once, at the edge. A broken image entry does not spoil the list: it is reported with its
 * identifier and the problem, and the valid entries stay usable.
 */

/** Exactly `%Y-%m-%dT%H:%M:%SZ`, as vmcatcher and hepixvmitrust parse it. */
const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;

export function parseListDate(value: string): Date | undefined {
  const m = DATE_RE.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number);
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Date.UTC rolls 2015-02-30 over to March; a real date round-trips.
  if (date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || h > 23 || mi > 59 || s > 59) return undefined;
  return date;
}

const listDate = z
  .string()
  .refine((v) => parseListDate(v) !== undefined, { message: 'must be a date like 2015-06-18T21:14:00Z' });

/** AppDB writes numbers as strings, hepixvmitrust as numbers: accept both as text. */
const textual = z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v));

/** Empty strings (AppDB writes `"sl:comments": ""`) count as absent. */
const optionalText = textual.optional().transform((v) => (v === undefined || v.trim() === '' ? undefined : v));

const requiredText = textual.refine((v) => v.trim() !== '', { message: 'must not be empty' });

const count = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const text = String(v).trim();
  if (!/^\d+$/.test(text)) {
    ctx.addIssue({ code: 'custom', message: `'${String(v)}' is not a whole number` });
    return z.NEVER;
  }
  const n = Number(text);
  if (!Number.isSafeInteger(n)) {
    ctx.addIssue({ code: 'custom', message: `'${text}' is too large` });
    return z.NEVER;
  }
  return n;
});

const sha512 = textual.pipe(
  z
    .string()
    .regex(/^[0-9a-fA-F]{128}$/, 'must be 128 hexadecimal digits (a sha512)')
    .transform((s) => s.toLowerCase()),
);

const httpUrl = textual.refine(
  (v) => {
    try {
      return ['http:', 'https:'].includes(new URL(v).protocol);
    } catch {
      return false;
    }
  },
  { message: 'must be an http(s) URL' },
);

/** `hv:image`. Required: what is needed to download and verify the image. */
const ImageSchema = z
  .object({
    'dc:identifier': requiredText,
    'dc:title': optionalText,
    'dc:description': optionalText,
    'hv:uri': httpUrl,
    'hv:size': count,
    'sl:checksum:sha512': sha512,
    'hv:format': optionalText,
    'hv:hypervisor': optionalText,
    'hv:version': optionalText,
    'sl:arch': optionalText,
    'sl:os': optionalText,
    'sl:osname': optionalText,
    'sl:osversion': optionalText,
    'sl:comments': optionalText,
    'dc:date:expires': listDate.optional(),
    'ad:mpuri': optionalText,
    'ad:base_mpuri': optionalText,
    'ad:appid': optionalText,
    'ad:group': optionalText,
    'ad:user:fullname': optionalText,
    'ad:user:guid': optionalText,
    'ad:user:uri': optionalText,
    'hv:ram_minimum': count.optional(),
    'ad:ram_recommended': count.optional(),
    'hv:core_minimum': count.optional(),
    'ad:core_recommended': count.optional(),
  })
  .loose();

const EndorserSchema = z
  .object({
    'hv:x509': z
      .object({
        'dc:creator': optionalText,
        'hv:ca': optionalText,
        'hv:dn': optionalText,
        'hv:email': optionalText,
      })
      .loose(),
  })
  .loose();

const ListSchema = z
  .object({
    'dc:identifier': requiredText,
    'dc:title': optionalText,
    'dc:description': optionalText,
    'dc:date:created': listDate.optional(),
    'dc:date:expires': listDate.optional(),
    'dc:source': optionalText,
    'hv:uri': optionalText,
    'hv:version': optionalText,
    'hv:endorser': EndorserSchema.optional(),
    'ad:vo': optionalText,
    'ad:num_of_images': count.optional(),
    'hv:images': z.array(z.unknown()),
  })
  .loose();

export interface ImageListImage {
  identifier: string;
  title?: string;
  description?: string;
  uri: string;
  size: number;
  checksumSha512: string;
  format?: string;
  hypervisor?: string;
  version?: string;
  arch?: string;
  os?: string;
  osName?: string;
  osVersion?: string;
  comments?: string;
  /** Per-image expiry (AppDB), ISO 8601. */
  expires?: string;
  expired: boolean;
  mpUri?: string;
  baseMpUri?: string;
  appId?: string;
  group?: string;
  user?: { fullname?: string; guid?: string; uri?: string };
  ramMinimum?: number;
  ramRecommended?: number;
  coreMinimum?: number;
  coreRecommended?: number;
}

interface ImageListEndorser {
  creator?: string;
  /** Issuer DN of the signer, slash form. */
  ca?: string;
  /** Subject DN of the signer, slash form. */
  dn?: string;
  email?: string;
}

export interface ImageList {
  identifier: string;
  title?: string;
  description?: string;
  created?: string;
  expires?: string;
  source?: string;
  uri?: string;
  version?: string;
  vo?: string;
  endorser?: ImageListEndorser;
  numberOfImages?: number;
  /** `ad:publisher:*` keys, without the prefix. */
  publisher?: Record<string, string>;
  /** `dc:date:expires` has passed: the list must not be trusted any more. */
  expired: boolean;
  /** `dc:date:created` lies in the future (vmcatcher refuses such a list). */
  createdInFuture: boolean;
  images: ImageListImage[];
}

interface InvalidImageEntry {
  /** Position in `hv:images`, from 0. */
  index: number;
  identifier?: string;
  problem: string;
}

export interface ParsedImageList {
  list: ImageList;
  invalid: InvalidImageEntry[];
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.join('.');
      const message = issue.code === 'invalid_type' && /undefined/.test(issue.message) ? 'is required' : issue.message;
      return where ? `${where} ${message}` : message;
    })
    .join('; ');
}

function iso(value: string | undefined): string | undefined {
  return value === undefined ? undefined : parseListDate(value)?.toISOString().replace('.000Z', 'Z');
}

/** Parses the image list JSON (text or an already parsed value). `now` decides expiry. */
export function parseImageList(json: string | unknown, now: Date = new Date()): ParsedImageList {
  let doc: unknown = json;
  if (typeof json === 'string') {
    try {
      doc = JSON.parse(json);
    } catch (err) {
      throw new InvalidInputError(`image list is not JSON: ${(err as Error).message}`);
    }
  }
  if (doc === null || typeof doc !== 'object' || !('hv:imagelist' in doc)) {
    throw new InvalidInputError('image list has no hv:imagelist object');
  }
  const result = ListSchema.safeParse((doc as Record<string, unknown>)['hv:imagelist']);
  if (!result.success) throw new InvalidInputError(`image list: hv:imagelist.${describeIssues(result.error)}`);
  const raw = result.data;

  const images: ImageListImage[] = [];
  const invalid: InvalidImageEntry[] = [];
  raw['hv:images'].forEach((entry, index) => {
    const image = (entry as Record<string, unknown> | null)?.['hv:image'];
    const identifier =
      typeof (image as Record<string, unknown>)?.['dc:identifier'] === 'string'
        ? (image as Record<string, string>)['dc:identifier'] || undefined
        : undefined;
    if (image === null || typeof image !== 'object') {
      invalid.push({ index, problem: 'entry has no hv:image object' });
      return;
    }
    const parsed = ImageSchema.safeParse(image);
    if (!parsed.success) {
      invalid.push({ index, identifier, problem: describeIssues(parsed.error) });
      return;
    }
    images.push(toImage(parsed.data, now));
  });

  const x509 = raw['hv:endorser']?.['hv:x509'];
  const publisher = Object.fromEntries(
    Object.entries(raw)
      .filter(([k, v]) => k.startsWith('ad:publisher:') && (typeof v === 'string' || typeof v === 'number'))
      .map(([k, v]) => [k.slice('ad:publisher:'.length), String(v)]),
  );
  const created = raw['dc:date:created'] ? parseListDate(raw['dc:date:created']) : undefined;
  const expires = raw['dc:date:expires'] ? parseListDate(raw['dc:date:expires']) : undefined;
  const list: ImageList = {
    identifier: raw['dc:identifier'],
    title: raw['dc:title'],
    description: raw['dc:description'],
    created: iso(raw['dc:date:created']),
    expires: iso(raw['dc:date:expires']),
    source: raw['dc:source'],
    uri: raw['hv:uri'],
    version: raw['hv:version'],
    vo: raw['ad:vo'],
    endorser: x509
      ? { creator: x509['dc:creator'], ca: x509['hv:ca'], dn: x509['hv:dn'], email: x509['hv:email'] }
      : undefined,
    numberOfImages: raw['ad:num_of_images'],
    publisher: Object.keys(publisher).length > 0 ? publisher : undefined,
    expired: expires !== undefined && expires.getTime() <= now.getTime(),
    createdInFuture: created !== undefined && created.getTime() > now.getTime(),
    images,
  };
  return { list: dropUndefined(list), invalid };
}

function toImage(raw: z.infer<typeof ImageSchema>, now: Date): ImageListImage {
  const expires = raw['dc:date:expires'] ? parseListDate(raw['dc:date:expires']) : undefined;
  const user = { fullname: raw['ad:user:fullname'], guid: raw['ad:user:guid'], uri: raw['ad:user:uri'] };
  return dropUndefined({
    identifier: raw['dc:identifier'],
    title: raw['dc:title'],
    description: raw['dc:description'],
    uri: raw['hv:uri'],
    size: raw['hv:size'],
    checksumSha512: raw['sl:checksum:sha512'],
    format: raw['hv:format'],
    hypervisor: raw['hv:hypervisor'],
    version: raw['hv:version'],
    arch: raw['sl:arch'],
    os: raw['sl:os'],
    osName: raw['sl:osname'],
    osVersion: raw['sl:osversion'],
    comments: raw['sl:comments'],
    expires: iso(raw['dc:date:expires']),
    expired: expires !== undefined && expires.getTime() <= now.getTime(),
    mpUri: raw['ad:mpuri'],
    baseMpUri: raw['ad:base_mpuri'],
    appId: raw['ad:appid'],
    group: raw['ad:group'],
    user: Object.values(user).some((v) => v !== undefined) ? dropUndefined(user) : undefined,
    ramMinimum: raw['hv:ram_minimum'],
    ramRecommended: raw['ad:ram_recommended'],
    coreMinimum: raw['hv:core_minimum'],
    coreRecommended: raw['ad:core_recommended'],
  });
}

function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/**
 * One image of a list → the event a producer enqueues. As the original: no event type
 * (that is how consumers tell list events from vmcatcher's), the list id and VO from the
 * list, the image fields from the image; new: the sha512, so the download can be verified.
 */
export function imageToEvent(list: Pick<ImageList, 'identifier' | 'vo'>, image: ImageListImage): ImageEvent {
  return ImageEventSchema.parse({
    origin: 'image-list',
    imageListId: list.identifier,
    vo: list.vo,
    imageId: image.identifier,
    title: image.title,
    description: image.description,
    uri: image.uri,
    size: image.size,
    version: image.version,
    hypervisor: image.hypervisor,
    format: image.format,
    arch: image.arch,
    checksumSha512: image.checksumSha512,
    comments: image.comments,
    os: image.os,
    osName: image.osName,
    osVersion: image.osVersion,
    mpUri: image.mpUri,
    extra: {},
  });
}
