import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, rm, stat, statfs, truncate } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { Config } from '../core/config.js';
import { FetchError, ImageIntegrityError, InvalidInputError } from '../core/errors.js';
import { basicAuth, createDispatcher, describeFetchFailure, httpGet, redact } from '../core/http.js';
import type { Logger } from '../core/logging.js';
import { resolveCredential } from '../core/credentials.js';
import type { ImageEvent } from '../core/event.js';
import { cancellationSignal, cancelledForGood, heartbeat, previousHeartbeat } from './context.js';
import type { AcquireInput, AcquiredImage, DownloadProgress } from './types.js';
import { createWorkDir, resolveInsideFolders, safeFileName } from './workspace.js';

export interface AcquireDeps {
  config: Config;
  logger: Logger;
}

/** Heartbeat (and resume checkpoint) at least this often while bytes flow. */
const HEARTBEAT_EVERY_MS = 1000;
const HEARTBEAT_EVERY_BYTES = 8 * 1024 * 1024;

/** The name the image was published under: the last URL segment, else the cache file name. */
export function publishedFileName(event: Pick<ImageEvent, 'uri' | 'filename'>): string | undefined {
  if (event.uri) {
    try {
      const segment = new URL(event.uri).pathname.split('/').filter(Boolean).pop();
      if (segment) return decodeURIComponent(segment);
    } catch {
      // not a URL: fall back to the file name
    }
  }
  return event.filename;
}

/** Compares what we got with what the event promised; throws naming both. */
export function checkIntegrity(what: string, expected: { size?: number; sha512?: string }, actual: { bytes: number; sha512: string }): void {
  if (expected.size !== undefined && expected.size !== actual.bytes) {
    throw new ImageIntegrityError(`${what}: size mismatch: expected ${expected.size} bytes (hv:size), got ${actual.bytes}`);
  }
  if (expected.sha512 && expected.sha512.toLowerCase() !== actual.sha512) {
    throw new ImageIntegrityError(`${what}: sha512 mismatch: expected ${expected.sha512.toLowerCase()}, got ${actual.sha512}`);
  }
}

/** Counts and hashes bytes as they pass, and reports progress. */
function hashingCounter(hash: Hash, start: number, onProgress: (offset: number) => void): Transform & { bytes: () => number } {
  let bytes = start;
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      try {
        onProgress(bytes + chunk.length);
      } catch (err) {
        done(err as Error);
        return;
      }
      hash.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
  }) as Transform & { bytes: () => number };
  t.bytes = () => bytes;
  return t;
}

async function hashFile(file: string, hash: Hash, end?: number): Promise<number> {
  let bytes = 0;
  await pipeline(createReadStream(file, end === undefined ? {} : { end: end - 1 }), async function* (source) {
    for await (const chunk of source) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    yield* [];
  });
  return bytes;
}

/**
 * Copies a file into the work folder, hashing in the same pass. Used for vmcatcher's cache,
 * which deletes files it does not know about: the image is taken out at once.
 */
async function copyHashed(from: string, to: string): Promise<{ bytes: number; sha512: string }> {
  const hash = createHash('sha512');
  const counter = hashingCounter(hash, 0, () => undefined);
  try {
    await pipeline(createReadStream(from), counter, createWriteStream(to, { mode: 0o600 }));
  } catch (err) {
    await rm(to, { force: true });
    throw err;
  }
  return { bytes: counter.bytes(), sha512: hash.digest('hex') };
}

/**
 * Gets the image file of an event into the per-workflow work folder, verified against the
 * event's sha512 and size: copied out of vmcatcher's cache, read from an allowed folder
 * (`file:`), or downloaded (resumable across activity retries).
 */
export async function acquireImage(deps: AcquireDeps, input: AcquireInput): Promise<AcquiredImage> {
  const { config, logger } = deps;
  const { event } = input;
  const expected = { size: event.size, sha512: event.checksumSha512 };
  const fileName = publishedFileName(event);
  const workDir = await createWorkDir(config, input.workflowId);

  if (event.type === 'AvailablePostfix' && event.cacheDir && event.filename) {
    if (event.filename.includes('/') || event.filename.includes('\\') || event.filename === '..' || event.filename === '.') {
      throw new InvalidInputError(`VMCATCHER_EVENT_FILENAME '${event.filename}' must be a plain file name`);
    }
    // Only configured folders: a message must never be able to name /etc as a "cache".
    const allowed = config.security.vmcatcherCacheFolders;
    await resolveInsideFolders(event.cacheDir, allowed, 'vmcatcher cache folder');
    const source = await resolveInsideFolders(path.join(event.cacheDir, event.filename), allowed, 'vmcatcher cache file');
    if (!(await stat(source)).isFile()) throw new InvalidInputError(`vmcatcher cache file ${source} is not a regular file`);
    const dest = path.join(workDir, safeFileName(event.filename));
    logger.info({ source, dest }, 'copying the image out of the vmcatcher cache');
    const got = await copyHashed(source, dest);
    try {
      checkIntegrity(`vmcatcher cache file ${source}`, expected, got);
    } catch (err) {
      await rm(dest, { force: true });
      throw err;
    }
    return { workDir, path: dest, ...got, source: 'vmcatcher-cache', fileName };
  }

  if (!event.uri) throw new InvalidInputError('the event has neither VMCATCHER_EVENT_HV_URI nor a vmcatcher cache file');
  let url: URL;
  try {
    url = new URL(event.uri);
  } catch {
    throw new InvalidInputError(`VMCATCHER_EVENT_HV_URI '${redact(event.uri)}' is not a URL`);
  }

  if (url.protocol === 'file:') {
    // Percent-decoded (the original used the raw path), then confined to the allowed folders.
    const source = await resolveInsideFolders(fileURLToPath(url), config.security.allowedFileFolders, 'file: URL');
    if (!(await stat(source)).isFile()) throw new InvalidInputError(`${source} is not a regular file`);
    const hash = createHash('sha512');
    const bytes = await hashFile(source, hash);
    const got = { bytes, sha512: hash.digest('hex') };
    checkIntegrity(source, expected, got);
    logger.info({ path: source, bytes }, 'using the local image file in place');
    return { workDir, path: source, ...got, source: 'file', fileName };
  }

  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidInputError(`VMCATCHER_EVENT_HV_URI scheme ${url.protocol} is not supported (http, https, file)`);
  }
  const dest = path.join(workDir, safeFileName(fileName));
  const got = await download(deps, { url, dest, expected, insecureSsl: input.insecureSsl, credentialName: input.credentialName });
  return { workDir, path: dest, ...got, source: 'download', fileName };
}

interface DownloadRequest {
  url: URL;
  dest: string;
  expected: { size?: number; sha512?: string };
  insecureSsl?: boolean;
  credentialName?: string;
}

async function download(deps: AcquireDeps, req: DownloadRequest): Promise<{ bytes: number; sha512: string }> {
  const { config, logger } = deps;
  const security = config.security;
  const { url, dest, expected } = req;
  const where = redact(url);

  if (expected.size !== undefined && expected.size > security.maxImageBytes) {
    throw new ImageIntegrityError(`${where}: hv:size ${expected.size} exceeds the limit of ${security.maxImageBytes} bytes (security.maxImageBytes)`);
  }
  const credentialHeaders: Record<string, string> = {};
  if (req.credentialName) {
    const token = await resolveCredential(config, req.credentialName);
    credentialHeaders.authorization = basicAuth(token, 'x-oauth-basic');
  }
  if (req.insecureSsl && url.protocol === 'https:') {
    logger.warn({ url: where, host: url.hostname }, `TLS certificate and host name checks are OFF for host ${url.hostname} (insecureSsl); redirects to other hosts are verified`);
  }

  // Resume: the last heartbeat of a previous attempt says how far the file on disk is good.
  const hash = createHash('sha512');
  let offset = 0;
  const previous = previousHeartbeat<DownloadProgress>();
  if (previous && Number.isInteger(previous.offset) && previous.offset > 0) {
    const existing = await lstat(dest).catch(() => undefined);
    if (existing?.isFile() && existing.size >= previous.offset) {
      await truncate(dest, previous.offset);
      offset = await hashFile(dest, hash);
      logger.info({ url: where, offset }, 'resuming the download of a previous attempt');
    }
  }
  if (offset === 0) await rm(dest, { force: true });

  const remaining = expected.size !== undefined ? Math.max(0, expected.size - offset) : 0;
  if (remaining > 0) {
    const fs = await statfs(path.dirname(dest));
    const free = fs.bavail * fs.bsize;
    if (free < remaining) {
      throw new FetchError(`not enough disk space in ${path.dirname(dest)} for ${where}: need ${remaining} bytes, ${free} free`, { permanent: false });
    }
  }

  const cancel = cancellationSignal();
  const timeout = AbortSignal.timeout(config.worker.downloadTimeoutMs);
  const signal = cancel ? AbortSignal.any([cancel, timeout]) : timeout;
  const dispatcher = createDispatcher({
    insecureTlsHost: req.insecureSsl ? url.hostname : undefined,
    connectTimeoutMs: security.connectTimeoutMs,
    readTimeoutMs: security.readTimeoutMs,
  });
  const startedAt = offset;
  let lastBeat = 0;
  let lastBeatOffset = offset;
  const total = expected.size;
  const beat = (now: number, position: number) => {
    lastBeat = now;
    lastBeatOffset = position;
    heartbeat({ offset: position, ...(total === undefined ? {} : { total }) } satisfies DownloadProgress);
  };
  beat(Date.now(), offset);

  let counter: ReturnType<typeof hashingCounter> | undefined;
  try {
    logger.info({ url: where, dest, offset }, offset ? 'downloading the rest of the image' : 'downloading the image');
    let response = await httpGet(url, {
      dispatcher,
      redirects: { maxRedirects: security.maxRedirects },
      headers: offset ? { range: `bytes=${offset}-` } : {},
      credentialHeaders,
      signal,
    }).catch(async (err) => {
      // A range the server cannot satisfy: the partial file is not worth keeping.
      if (offset && err instanceof FetchError && err.status === 416) return undefined;
      throw err;
    });
    const restart = async () => {
      await rm(dest, { force: true });
      offset = 0;
      hash.destroy();
      return createHash('sha512');
    };
    let activeHash = hash;
    if (offset && (!response || response.status !== 206 || !contentRangeStartsAt(response.headers['content-range'], offset))) {
      logger.info({ url: where, status: response?.status }, 'the server did not resume at our offset; downloading the whole image again');
      await response?.body.dump().catch(() => undefined);
      activeHash = await restart();
      response = undefined;
    }
    response ??= await httpGet(url, { dispatcher, redirects: { maxRedirects: security.maxRedirects }, credentialHeaders, signal });
    if (response.status !== 200 && response.status !== 206) {
      await response.body.dump().catch(() => undefined);
      throw new FetchError(`GET ${where} answered HTTP ${response.status}, not the image`, { permanent: true, status: response.status });
    }
    const limit = expected.size ?? security.maxImageBytes;
    counter = hashingCounter(activeHash, offset, (position) => {
      if (position > limit) {
        throw expected.size !== undefined
          ? new ImageIntegrityError(`${where}: size mismatch: expected ${expected.size} bytes (hv:size), the server sends more`)
          : new ImageIntegrityError(`${where} is larger than the limit of ${security.maxImageBytes} bytes (security.maxImageBytes)`);
      }
      const now = Date.now();
      if (now - lastBeat >= HEARTBEAT_EVERY_MS || position - lastBeatOffset >= HEARTBEAT_EVERY_BYTES) beat(now, position);
    });
    const fileOut = createWriteStream(dest, { flags: offset ? 'a' : 'w', mode: 0o600 });
    try {
      await pipeline(response.body, counter, fileOut, { signal });
    } catch (err) {
      if (err instanceof ImageIntegrityError) throw err;
      throw describeFetchFailure(err, url);
    }
    const got = { bytes: counter.bytes(), sha512: activeHash.digest('hex') };
    logger.info({ url: where, bytes: got.bytes, fetchedThisAttempt: got.bytes - offset, resumedFrom: offset }, 'download complete');
    checkIntegrity(where, expected, got);
    if (got.bytes === 0) throw new ImageIntegrityError(`${where} is empty (0 bytes)`);
    return got;
  } catch (err) {
    const fetched = counter ? counter.bytes() - startedAt : 0;
    if (err instanceof ImageIntegrityError || cancelledForGood() || (err instanceof FetchError && err.permanent)) {
      // Nothing to resume: a wrong file, a cancelled workflow, or a URL that will not work.
      await rm(dest, { force: true });
    } else if (counter) {
      // Tell the next attempt how far the file on disk is good (what reached the disk, not what was read).
      const onDisk = await stat(dest).then((s) => s.size).catch(() => 0);
      beat(Date.now(), onDisk);
    }
    logger.warn({ url: where, fetchedThisAttempt: fetched, error: (err as Error).message }, 'download failed');
    if (cancel?.aborted) throw cancel.reason;
    if (timeout.aborted) throw new FetchError(`download of ${where} timed out after ${config.worker.downloadTimeoutMs} ms (worker.downloadTimeoutMs)`);
    throw err;
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

function contentRangeStartsAt(header: string | string[] | undefined, offset: number): boolean {
  const value = Array.isArray(header) ? header[0] : header;
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(value ?? '');
  return match !== null && Number(match[1]) === offset;
}
