/**
 * OpenStack Glance over its Images API v2 (undici, no Python client): image records, streamed
 * uploads with progress and hash checks, finding our images by identity properties and owner,
 * visibility, members, deactivation and deletion. Every call carries a token from a
 * KeystoneSession; a 401 renews it and repeats the call once (an upload reopens its file).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { ImageIntegrityError } from '../../core/errors.js';
import { describeFetchFailure } from '../../core/http.js';
import { CloudApiError } from './errors.js';
import { errorText, type KeystoneSession } from './keystone.js';

export type Visibility = 'public' | 'private' | 'shared' | 'community';

/** Statuses of a record whose data never arrived (or is still arriving). */
const INCOMPLETE_STATUSES = ['queued', 'saving', 'uploading', 'importing'] as const;

/** The image fields Glance defines; every other key is a custom property (a string). */
const CORE_FIELDS = new Set([
  'id',
  'name',
  'status',
  'visibility',
  'owner',
  'size',
  'virtual_size',
  'checksum',
  'os_hash_algo',
  'os_hash_value',
  'disk_format',
  'container_format',
  'min_disk',
  'min_ram',
  'protected',
  'tags',
  'created_at',
  'updated_at',
  'file',
  'schema',
  'self',
  'direct_url',
  'locations',
  'os_hidden',
  'stores',
]);

const ImageSchema = z
  .object({
    id: z.string(),
    name: z.string().nullish(),
    status: z.string(),
    visibility: z.string(),
    owner: z.string().nullish(),
    size: z.number().nullish(),
    checksum: z.string().nullish(),
    os_hash_algo: z.string().nullish(),
    os_hash_value: z.string().nullish(),
    disk_format: z.string().nullish(),
    container_format: z.string().nullish(),
    tags: z.array(z.string()).default([]),
  })
  .passthrough();
export type GlanceImage = z.infer<typeof ImageSchema>;

const ImageListSchema = z.object({ images: z.array(ImageSchema), next: z.string().optional() });
const MemberSchema = z.object({ member_id: z.string(), image_id: z.string(), status: z.string() });
type ImageMember = z.infer<typeof MemberSchema>;

/** The custom (string) properties of an image. */
export function customProperties(image: GlanceImage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(image))
    if (!CORE_FIELDS.has(key) && typeof value === 'string') out[key] = value;
  return out;
}

interface NewImage {
  name: string;
  diskFormat: string;
  containerFormat: string;
  visibility: Visibility;
  properties: Record<string, string>;
  tags?: string[];
  minDisk?: number;
  minRam?: number;
}

export interface UploadResult {
  size: number;
  md5: string;
  /** The hash Glance is expected to compute (its `hashing_algorithm`), by that algorithm's name. */
  hashAlgo: string;
  hashValue: string;
}

interface UploadOptions {
  /** Called as bytes leave (throttling is the caller's); the last call has bytesDone = total. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  signal?: AbortSignal;
}

interface GlanceClientOptions {
  session: KeystoneSession;
  /** Glance's URL; from the catalog (service type `image`) when absent. */
  endpoint?: string;
  dispatcher?: Dispatcher;
  /** Glance's `[DEFAULT] hashing_algorithm` (sha512 unless the site changed it): computed while uploading. */
  hashAlgorithm?: string;
  /** Longest wait for an answer or between body chunks on ordinary calls. */
  timeoutMs?: number;
  /** Longest wait for Glance's answer once an upload's last byte has left. */
  uploadTimeoutMs?: number;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface CallOptions {
  json?: unknown;
  patch?: unknown[];
  /** Statuses that are an answer, not an error (404 → undefined for look-ups). */
  accept?: number[];
  what: string;
}

export class GlanceClient {
  private readonly hashAlgorithm: string;

  constructor(private readonly opts: GlanceClientOptions) {
    this.hashAlgorithm = opts.hashAlgorithm ?? 'sha512';
    // Fails now rather than after a whole upload when Node has no such hash.
    createHash(this.hashAlgorithm);
  }

  /** The project our token is scoped to: the owner of what we create. */
  projectId(): Promise<string> {
    return this.opts.session.projectId();
  }

  async createImage(image: NewImage): Promise<GlanceImage> {
    const body: Record<string, unknown> = {
      ...image.properties,
      name: image.name,
      disk_format: image.diskFormat,
      container_format: image.containerFormat,
      visibility: image.visibility,
      tags: image.tags ?? [],
    };
    if (image.minDisk !== undefined) body.min_disk = image.minDisk;
    if (image.minRam !== undefined) body.min_ram = image.minRam;
    const res = await this.call('POST', '/v2/images', { json: body, what: `create image '${image.name}'` });
    return ImageSchema.parse(res.json);
  }

  async getImage(id: string): Promise<GlanceImage | undefined> {
    const res = await this.call('GET', `/v2/images/${encodeURIComponent(id)}`, {
      accept: [404],
      what: `read image ${id}`,
    });
    return res.status === 404 ? undefined : ImageSchema.parse(res.json);
  }

  /**
   * Streams a file into an image record (PUT /v2/images/{id}/file), hashing what leaves. A 401
   * before Glance read the data (an expired or revoked token) renews the token and sends again.
   */
  async uploadFile(id: string, file: string, opts: UploadOptions = {}): Promise<UploadResult> {
    const { size } = await stat(file);
    for (let attempt = 1; ; attempt++) {
      const md5 = createHash('md5');
      const hash = createHash(this.hashAlgorithm);
      let done = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          md5.update(chunk);
          hash.update(chunk);
          done += chunk.length;
          opts.onProgress?.(done, size);
          cb(null, chunk);
        },
      });
      const source = createReadStream(file);
      source.on('error', (err) => meter.destroy(err));
      source.pipe(meter);
      const token = await this.opts.session.token();
      const url = `${await this.endpoint()}/v2/images/${encodeURIComponent(id)}/file`;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method: 'PUT',
          headers: {
            'x-auth-token': token,
            'content-type': 'application/octet-stream',
            'content-length': String(size),
          },
          body: meter,
          signal: opts.signal,
          dispatcher: this.opts.dispatcher,
          headersTimeout: this.opts.uploadTimeoutMs ?? 30 * 60_000,
          bodyTimeout: this.opts.timeoutMs ?? 120_000,
        });
      } catch (err) {
        source.destroy();
        throw new CloudApiError(
          `uploading ${file} to Glance image ${id} failed: ${describeFetchFailure(err, url).message}`,
          { cause: err },
        );
      }
      const text = await res.body.text();
      source.destroy();
      if (res.statusCode === 401 && attempt === 1) {
        this.opts.session.invalidate(token);
        continue;
      }
      if (res.statusCode !== 204 && res.statusCode !== 200) {
        throw new CloudApiError(
          `Glance refused the upload of ${file} to image ${id}: HTTP ${res.statusCode} ${errorText(text)}`,
          { status: res.statusCode },
        );
      }
      if (done !== size)
        throw new CloudApiError(
          `uploading ${file} to image ${id}: ${done} of ${size} bytes left, the file changed while uploading`,
        );
      return { size, md5: md5.digest('hex'), hashAlgo: this.hashAlgorithm, hashValue: hash.digest('hex') };
    }
  }

  /**
   * Reads the image back and compares what Glance stored (size, checksum, os_hash_algo/value)
   * with what we sent. A mismatch is an ImageIntegrityError: the record must not be used.
   */
  async verifyUpload(id: string, sent: UploadResult): Promise<GlanceImage> {
    const image = await this.getImage(id);
    if (!image) throw new CloudApiError(`Glance image ${id} disappeared right after its upload`);
    const problems: string[] = [];
    if (image.status !== 'active') problems.push(`status is '${image.status}', not 'active'`);
    if (image.size !== sent.size) problems.push(`size is ${image.size ?? 'unset'}, we sent ${sent.size} bytes`);
    if (image.checksum && image.checksum !== sent.md5)
      problems.push(`checksum (md5) is ${image.checksum}, we sent ${sent.md5}`);
    if (image.os_hash_algo !== sent.hashAlgo) {
      problems.push(
        `Glance hashed with '${image.os_hash_algo ?? 'nothing'}', we computed ${sent.hashAlgo} (set the target's hashAlgorithm to Glance's hashing_algorithm)`,
      );
    } else if (image.os_hash_value !== sent.hashValue) {
      problems.push(`os_hash_value (${sent.hashAlgo}) is ${image.os_hash_value}, we sent ${sent.hashValue}`);
    }
    if (problems.length > 0)
      throw new ImageIntegrityError(`Glance image ${id} does not hold what we uploaded: ${problems.join('; ')}`);
    return image;
  }

  /**
   * Images of our project whose custom properties equal `properties`, in any status and
   * visibility. Glance filters by owner and properties; the result is checked again here, so a
   * server that ignored a filter can never make us touch another project's image.
   */
  async findOurImages(properties: Record<string, string>): Promise<GlanceImage[]> {
    const owner = await this.projectId();
    const query = new URLSearchParams({ owner, visibility: 'all', limit: '100', ...properties });
    let next: string | undefined = `/v2/images?${query.toString()}`;
    const found: GlanceImage[] = [];
    for (let pages = 0; next && pages < 100; pages++) {
      const res = await this.call('GET', next, { what: 'list images' });
      const page = ImageListSchema.parse(res.json);
      found.push(...page.images);
      next = page.next;
    }
    return found.filter(
      (image) => image.owner === owner && Object.entries(properties).every(([k, v]) => image[k] === v),
    );
  }

  /**
   * Deletes our records matching `properties` whose data never arrived (queued, saving…): what a
   * crashed or cancelled upload leaves. Returns their ids. Never touches another project's images.
   */
  async deleteIncomplete(properties: Record<string, string>): Promise<string[]> {
    const incomplete = (await this.findOurImages(properties)).filter((image) =>
      (INCOMPLETE_STATUSES as readonly string[]).includes(image.status),
    );
    for (const image of incomplete) await this.deleteImage(image.id);
    return incomplete.map((image) => image.id);
  }

  /** JSON-patch: `set` adds or replaces properties, `remove` drops them (absent ones are skipped). */
  async updateImage(
    id: string,
    change: { set?: Record<string, string | number | boolean>; remove?: string[] },
  ): Promise<GlanceImage> {
    const current = await this.getImage(id);
    if (!current) throw new CloudApiError(`Glance image ${id} does not exist`, { status: 404 });
    const ops: unknown[] = [];
    for (const [key, value] of Object.entries(change.set ?? {}))
      ops.push({ op: key in current ? 'replace' : 'add', path: `/${key}`, value });
    for (const key of change.remove ?? []) if (key in current) ops.push({ op: 'remove', path: `/${key}` });
    if (ops.length === 0) return current;
    const res = await this.call('PATCH', `/v2/images/${encodeURIComponent(id)}`, {
      patch: ops,
      what: `update image ${id}`,
    });
    return ImageSchema.parse(res.json);
  }

  async setVisibility(id: string, visibility: Visibility): Promise<GlanceImage> {
    try {
      return await this.updateImage(id, { set: { visibility } });
    } catch (err) {
      if (err instanceof CloudApiError && err.status === 403 && visibility === 'public') {
        throw new CloudApiError(
          `Glance refused to make image ${id} public: its publicize_image policy needs the admin role, which our credential does not have ` +
            `(use visibility shared or community, or ask the cloud's operators for the role)`,
          { status: 403, cause: err },
        );
      }
      throw err;
    }
  }

  async members(id: string): Promise<ImageMember[]> {
    const res = await this.call('GET', `/v2/images/${encodeURIComponent(id)}/members`, {
      what: `list members of image ${id}`,
    });
    return z.object({ members: z.array(MemberSchema) }).parse(res.json).members;
  }

  /** Shares the image with a project (the image must be `shared`); already a member is fine. */
  async addMember(id: string, projectId: string): Promise<void> {
    await this.call('POST', `/v2/images/${encodeURIComponent(id)}/members`, {
      json: { member: projectId },
      accept: [409],
      what: `share image ${id} with project ${projectId}`,
    });
  }

  async removeMember(id: string, projectId: string): Promise<void> {
    await this.call('DELETE', `/v2/images/${encodeURIComponent(id)}/members/${encodeURIComponent(projectId)}`, {
      accept: [404],
      what: `stop sharing image ${id} with project ${projectId}`,
    });
  }

  /** As the member project: accept (or reject) an image shared with us. */
  async setMemberStatus(id: string, status: 'accepted' | 'rejected' | 'pending'): Promise<void> {
    const me = await this.projectId();
    await this.call('PUT', `/v2/images/${encodeURIComponent(id)}/members/${encodeURIComponent(me)}`, {
      json: { status },
      what: `${status} image ${id}`,
    });
  }

  async deactivate(id: string): Promise<void> {
    await this.call('POST', `/v2/images/${encodeURIComponent(id)}/actions/deactivate`, {
      what: `deactivate image ${id}`,
    });
  }

  async reactivate(id: string): Promise<void> {
    await this.call('POST', `/v2/images/${encodeURIComponent(id)}/actions/reactivate`, {
      what: `reactivate image ${id}`,
    });
  }

  /** Deletes an image; one already gone is fine. */
  async deleteImage(id: string): Promise<void> {
    await this.call('DELETE', `/v2/images/${encodeURIComponent(id)}`, { accept: [404], what: `delete image ${id}` });
  }

  /** Glance's URL: the configured one, else the catalog's image endpoint. */
  async endpoint(): Promise<string> {
    return (this.opts.endpoint ?? (await this.opts.session.endpoint('image'))).replace(/\/+$/, '');
  }

  private async call(method: Method, route: string, opts: CallOptions): Promise<{ status: number; json: unknown }> {
    const body =
      opts.patch !== undefined
        ? JSON.stringify(opts.patch)
        : opts.json !== undefined
          ? JSON.stringify(opts.json)
          : undefined;
    const contentType = opts.patch !== undefined ? 'application/openstack-images-v2.1-json-patch' : 'application/json';
    for (let attempt = 1; ; attempt++) {
      const token = await this.opts.session.token();
      const url = `${await this.endpoint()}${route}`;
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method,
          headers: {
            'x-auth-token': token,
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': contentType } : {}),
          },
          body,
          dispatcher: this.opts.dispatcher,
          headersTimeout: this.opts.timeoutMs ?? 120_000,
          bodyTimeout: this.opts.timeoutMs ?? 120_000,
        });
      } catch (err) {
        throw new CloudApiError(`Glance: ${opts.what} failed: ${describeFetchFailure(err, url).message}`, {
          cause: err,
        });
      }
      const text = await res.body.text();
      if (res.statusCode === 401 && attempt === 1) {
        this.opts.session.invalidate(token);
        continue;
      }
      if (res.statusCode >= 300 && !(opts.accept ?? []).includes(res.statusCode)) {
        throw new CloudApiError(`Glance: ${opts.what} failed: HTTP ${res.statusCode} ${errorText(text)}`, {
          status: res.statusCode,
        });
      }
      let json: unknown;
      try {
        json = text && res.statusCode < 300 ? JSON.parse(text) : undefined;
      } catch {
        throw new CloudApiError(`Glance: ${opts.what}: the answer is not JSON`);
      }
      return { status: res.statusCode, json };
    }
  }
}
