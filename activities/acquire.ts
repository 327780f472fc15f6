import { createReadStream } from 'node:fs';
import { lstat, open, rm, stat, truncate, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { Config } from '../core/config.js';
import { credentialNameFor, resolveCredential } from '../core/credentials.js';
import {
  FetchError,
  ImageIntegrityError,
  InvalidInputError,
  OutOfSpaceError,
  SnfVmcatcherError,
} from '../core/errors.js';
import { EVENT_FIELDS, type ImageEvent } from '../core/event.js';
import type { Logger } from '../core/logging.js';
import { basicAuth, createDispatcher, describeFetchFailure, httpGet, redact, type HttpResponse } from '../core/http.js';
import { cancellationSignal, heartbeat, previousHeartbeat } from './context.js';
import { asOutOfSpace, diskPolicy, reserveSpace, type SpaceReservation } from './disk.js';
import { keepHeartbeating, type StepProgress } from './heartbeats.js';
import { trailingHasher, type FileDigest, type TrailingHasher } from './trailing-hash.js';
import type { AcquireInput, AcquiredImage, ActivityDeps, DownloadProgress } from './types.js';
import { resolveInsideFolders, safeFileName, withWorkDir, type WorkDirLease } from './workspace.js';
import { downloadBlob } from '../oci/blob.js';
import { RegistryClient, registryAccess, resolveRegistryLogin } from '../oci/client.js';

/** What the event promised about the file. */
interface Expected {
  size?: number;
  sha512?: string;
  sha256?: string;
}

/** One attempt of the acquire step: who it is, what it holds, what stops it. */
interface Attempt {
  deps: ActivityDeps;
  lease: WorkDirLease;
  expected: Expected;
  /** Aborted when the activity is cancelled (or times out) or a newer attempt takes the folder over. */
  signal: AbortSignal;
}

/** Bytes the writer lets pile up before it pushes back on the network or the source file. */
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

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
export function checkIntegrity(
  what: string,
  expected: Expected,
  actual: { bytes: number; sha512: string; sha256?: string },
): void {
  if (expected.size !== undefined && expected.size !== actual.bytes) {
    throw new ImageIntegrityError(
      `${what}: size mismatch: expected ${expected.size} bytes (hv:size), got ${actual.bytes}`,
    );
  }
  if (expected.sha512 && expected.sha512.toLowerCase() !== actual.sha512) {
    throw new ImageIntegrityError(
      `${what}: sha512 mismatch: expected ${expected.sha512.toLowerCase()} (${EVENT_FIELDS.checksumSha512}), got ${actual.sha512}`,
    );
  }
  if (expected.sha256) {
    // A caller that was promised a sha256 and did not compute one is a bug, never a pass.
    if (actual.sha256 === undefined) throw new Error(`${what}: the sha256 was not computed`);
    if (expected.sha256.toLowerCase() !== actual.sha256) {
      throw new ImageIntegrityError(
        `${what}: sha256 mismatch: expected ${expected.sha256.toLowerCase()} (${EVENT_FIELDS.checksumSha256}), got ${actual.sha256}`,
      );
    }
  }
}

/**
 * Whether an event may be registered as it is: every checksum it carries is checked against the
 * bytes whatever its origin, and one that carries none is registered only where the site allows
 * it (`security.allowUnverifiedImages`), except a vmcatcher cache file (vmcatcher verified it
 * against its signed image list) and the operator's own command (`register-now`, `transform`).
 * Checked in the acquire step, before a byte is fetched: every registration (queue, subscription,
 * register-now) goes through it, and it is the only step that reads the bytes. Throws
 * InvalidInputError (permanent) naming the setting.
 */
export function checkVerifiable(config: Config, event: ImageEvent, logger?: Logger): void {
  if (event.checksumSha512 || event.checksumSha256) return;
  const fromCache = event.type === 'AvailablePostfix' && Boolean(event.cacheDir && event.filename);
  const image = `image ${event.imageId ?? '?'}${event.imageListId ? ` of ${event.imageListId}` : ''}`;
  if (fromCache) return;
  if (config.security.allowUnverifiedImages || event.origin === 'command') {
    logger?.warn(
      { imageId: event.imageId, imageListId: event.imageListId, origin: event.origin },
      `${image} carries no checksum: registered UNVERIFIED (${event.origin === 'command' ? "the operator's own command" : 'security.allowUnverifiedImages = true'})`,
    );
    return;
  }
  throw new InvalidInputError(
    `${image}: the event carries no checksum (${EVENT_FIELDS.checksumSha512} or ${EVENT_FIELDS.checksumSha256}); ` +
      'unverified images are refused unless security.allowUnverifiedImages = true',
  );
}

/**
 * Gets the image file of an event into the per-workflow work folder, verified against the
 * event's sha512 and size: copied out of vmcatcher's cache, read from an allowed folder
 * (`file:`), or downloaded (resumable across activity retries). The attempt holds the work
 * folder while it runs: an attempt that Temporal gave up on (heartbeat timeout) is stopped by
 * its retry and then touches no file (see claimWorkDir).
 */
export async function acquireImage(deps: ActivityDeps, input: AcquireInput): Promise<AcquiredImage> {
  const { event } = input;
  checkVerifiable(deps.config, event, deps.logger);
  const fileName = publishedFileName(event);
  return withWorkDir(deps.config, input.workflowId, async (lease) => {
    const cancel = cancellationSignal();
    const attempt: Attempt = {
      deps,
      lease,
      expected: { size: event.size, sha512: event.checksumSha512, sha256: event.checksumSha256 },
      signal: cancel ? AbortSignal.any([cancel, lease.signal]) : lease.signal,
    };
    if (event.type === 'AvailablePostfix' && event.cacheDir && event.filename) {
      return {
        ...(await copyFromVmcatcherCache(attempt, event.cacheDir, event.filename)),
        source: 'vmcatcher-cache',
        fileName,
      };
    }
    const url = imageUrl(event);
    if (url.protocol === 'file:') return { ...(await useLocalFile(attempt, url)), source: 'file', fileName };
    const dest = path.join(lease.dir, safeFileName(fileName));
    const blob = registryBlobOf(event, url);
    const credentialName = blob
      ? (input.credentialName ??
        credentialNameFor(deps.config, {
          url: event.uri,
          imageListId: event.imageListId,
          insecureTls: input.insecureSsl,
        }))
      : downloadCredential(deps, url, input);
    if (blob) {
      const pulled = await downloadFromRegistry(attempt, {
        blob,
        dest,
        insecureSsl: input.insecureSsl,
        credentialName,
      });
      // The sha256 is the digest, checked while downloading; a sha512 too, if the event gives one.
      if (attempt.expected.sha512) await verifyWholeFile(attempt, `the registry layer ${blob.digest}`, dest, pulled);
      return {
        workDir: lease.dir,
        path: dest,
        bytes: pulled.bytes,
        sha256: pulled.sha256,
        source: 'download',
        fileName,
      };
    }
    const got = await download(attempt, { url, dest, insecureSsl: input.insecureSsl, credentialName });
    return { workDir: lease.dir, path: dest, ...got, source: 'download', fileName };
  });
}

function imageUrl(event: ImageEvent): URL {
  if (!event.uri)
    throw new InvalidInputError('the event has neither VMCATCHER_EVENT_HV_URI nor a vmcatcher cache file');
  let url: URL;
  try {
    url = new URL(event.uri);
  } catch {
    throw new InvalidInputError(`VMCATCHER_EVENT_HV_URI '${redact(event.uri)}' is not a URL`);
  }
  if (!['file:', 'http:', 'https:'].includes(url.protocol)) {
    throw new InvalidInputError(`VMCATCHER_EVENT_HV_URI scheme ${url.protocol} is not supported (http, https, file)`);
  }
  return url;
}

/** A registry layer by digest: the registry's base, the repository and the digest the event's URI names. */
interface RegistryBlob {
  registry: URL;
  repository: string;
  digest: string;
}

/**
 * The layer an event from a registry names (oci/annotations.ts writes its URI as
 * `<registry>/v2/<repository>/blobs/sha256:<hex>`), or undefined for any other event. A registry
 * event whose URI is not its own layer's blob is refused rather than downloaded unchecked.
 */
export function registryBlobOf(event: ImageEvent, url: URL): RegistryBlob | undefined {
  if (event.origin !== 'registry') return undefined;
  const match = /^(.*?\/)v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
  if (!match || !event.checksumSha256 || match[3] !== `sha256:${event.checksumSha256.toLowerCase()}`) {
    throw new InvalidInputError(
      `registry image ${event.imageId ?? '?'}: ${redact(url)} is not the blob of its layer sha256:${event.checksumSha256 ?? '(none)'}`,
    );
  }
  return { registry: new URL(match[1], url), repository: match[2], digest: match[3] };
}

/** Reads a finished file once more for a checksum its download did not compute (a registry layer's sha512). */
async function verifyWholeFile(
  attempt: Attempt,
  what: string,
  file: string,
  got: { bytes: number; sha256: string },
): Promise<void> {
  const hasher = trailingHasher(file, { available: got.bytes, signal: attempt.signal });
  const stopBeating = keepHeartbeating(() => ({
    step: 'sha512 of the downloaded layer',
    bytesDone: hasher.hashed(),
    bytesTotal: got.bytes,
  }));
  try {
    const digest = await hasher.finish(got.bytes);
    checkIntegrity(what, attempt.expected, { ...digest, sha256: got.sha256 });
  } catch (err) {
    if (err instanceof ImageIntegrityError) await rm(file, { force: true });
    throw err;
  } finally {
    stopBeating();
    await hasher.stop();
  }
}

/** The file's size against hv:size before reading a byte of it: a wrong file costs nothing. */
function checkSizeFirst(what: string, expected: Expected, bytes: number): void {
  if (expected.size !== undefined && expected.size !== bytes) {
    throw new ImageIntegrityError(
      `${what}: size mismatch: expected ${expected.size} bytes (hv:size), the file has ${bytes}`,
    );
  }
}

/** `file:` URL: used in place (confined to the allowed folders), hashed on a thread while heartbeating. */
async function useLocalFile(attempt: Attempt, url: URL): Promise<{ workDir: string; path: string } & FileDigest> {
  const { config, logger } = attempt.deps;
  // Percent-decoded (the original used the raw path), then confined to the allowed folders.
  const source = await resolveInsideFolders(fileURLToPath(url), config.security.allowedFileFolders, 'file: URL');
  const info = await stat(source);
  if (!info.isFile()) throw new InvalidInputError(`${source} is not a regular file`);
  checkSizeFirst(source, attempt.expected, info.size);
  const hasher = trailingHasher(source, {
    available: info.size,
    signal: attempt.signal,
    sha256: attempt.expected.sha256 !== undefined,
  });
  const stopBeating = keepHeartbeating(() => ({
    step: 'checksum of the local file',
    bytesDone: hasher.hashed(),
    bytesTotal: info.size,
  }));
  try {
    const got = await hasher.finish(info.size);
    checkIntegrity(source, attempt.expected, got);
    logger.info({ path: source, bytes: got.bytes }, 'using the local image file in place');
    return { workDir: attempt.lease.dir, path: source, ...got };
  } finally {
    stopBeating();
    await hasher.stop();
  }
}

/**
 * vmcatcher's cache: copied out at once (vmcatcher deletes files it does not know about), the
 * copy hashed behind the writes.
 */
async function copyFromVmcatcherCache(
  attempt: Attempt,
  cacheDir: string,
  fileName: string,
): Promise<{ workDir: string; path: string } & FileDigest> {
  const { config, logger } = attempt.deps;
  if (fileName.includes('/') || fileName.includes('\\') || fileName === '..' || fileName === '.') {
    throw new InvalidInputError(`VMCATCHER_EVENT_FILENAME '${fileName}' must be a plain file name`);
  }
  // Only configured folders: a message must never be able to name /etc as a "cache".
  const allowed = config.security.vmcatcherCacheFolders;
  await resolveInsideFolders(cacheDir, allowed, 'vmcatcher cache folder');
  const source = await resolveInsideFolders(path.join(cacheDir, fileName), allowed, 'vmcatcher cache file');
  const info = await stat(source);
  if (!info.isFile()) throw new InvalidInputError(`vmcatcher cache file ${source} is not a regular file`);
  const what = `vmcatcher cache file ${source}`;
  checkSizeFirst(what, attempt.expected, info.size);
  const dest = path.join(attempt.lease.dir, safeFileName(fileName));
  logger.info({ source, dest }, 'copying the image out of the vmcatcher cache');
  const space = await reserveSpace(attempt.lease.dir, info.size, `the copy of ${what}`, diskPolicy(config));
  const meter = new Meter('copy from the vmcatcher cache', info.size);
  const stopBeating = keepHeartbeating(() => meter.progress());
  try {
    const got = await writeHashed(
      attempt,
      attempt.signal,
      {
        what: `the copy of ${what}`,
        source: createReadStream(source, { highWaterMark: 1024 * 1024 }),
        dest,
        start: 0,
        maxBytes: info.size,
      },
      meter,
    );
    checkIntegrity(what, attempt.expected, got);
    return { workDir: attempt.lease.dir, path: dest, ...got };
  } catch (err) {
    throw await failed(attempt, err, dest, { keepPartial: false, neededBytes: info.size });
  } finally {
    stopBeating();
    space.release();
  }
}

/** How far a step that writes and hashes a file has got: what its heartbeats report. */
class Meter {
  written = 0;
  private hasher?: TrailingHasher;
  constructor(
    private readonly step: string,
    private readonly total?: number,
  ) {}

  /** The transfer is over; only the hash (behind it) is still running. */
  hashing(hasher: TrailingHasher): void {
    this.hasher = hasher;
  }

  progress(): StepProgress {
    return this.hasher
      ? { step: `${this.step}: sha512`, bytesDone: this.hasher.hashed(), bytesTotal: this.written }
      : { step: this.step, bytesDone: this.written, bytesTotal: this.total };
  }
}

interface WriteJob {
  /** For messages, e.g. "the download of https://…". */
  what: string;
  source: Readable;
  dest: string;
  /** Bytes already in `dest` (a resumed download), kept and hashed again. */
  start: number;
  maxBytes: number;
  tooLarge?: () => Error;
}

/**
 * Streams a source into `dest` from byte `start`, hashing the file on a thread that reads behind
 * the writes. The caller heartbeats from `meter`.
 */
async function writeHashed(
  attempt: Pick<Attempt, 'expected'>,
  signal: AbortSignal,
  job: WriteJob,
  meter: Meter,
): Promise<FileDigest> {
  meter.written = job.start;
  // The file exists before the hasher opens it.
  const file = await open(job.dest, job.start ? 'r+' : 'w', 0o600);
  const hasher = trailingHasher(job.dest, {
    available: job.start,
    signal,
    sha256: attempt.expected.sha256 !== undefined,
  });
  try {
    const writer = fileWriter(file, job.start, {
      maxBytes: job.maxBytes,
      tooLarge:
        job.tooLarge ?? (() => new ImageIntegrityError(`${job.what}: more than the ${job.maxBytes} bytes expected`)),
      onWritten: (bytes) => {
        meter.written = bytes;
        hasher.advance(bytes);
      },
    });
    await pipeline(job.source, writer, { signal });
    await file.close();
    meter.hashing(hasher);
    return await hasher.finish(meter.written);
  } finally {
    // A source not consumed to its end (a failure) is let go: a file descriptor, an HTTP body.
    job.source.destroy();
    await hasher.stop();
    // close() waits for a write still in flight: once this returns, this attempt writes nothing more.
    await file.close().catch(() => undefined);
  }
}

/**
 * A Writable onto an open file at explicit positions that reports, after each write returns,
 * how many bytes the file holds: what the hasher may read and what a retry may resume from.
 */
function fileWriter(
  file: FileHandle,
  start: number,
  opts: { maxBytes: number; tooLarge: () => Error; onWritten: (bytes: number) => void },
): Writable {
  let position = start;
  return new Writable({
    highWaterMark: WRITE_BUFFER_BYTES,
    writev(chunks, callback) {
      const buffers = chunks.map((c) => c.chunk as Buffer);
      const length = buffers.reduce((n, b) => n + b.length, 0);
      if (position + length > opts.maxBytes) {
        callback(opts.tooLarge());
        return;
      }
      writeAll(file, buffers, length, position).then(() => {
        position += length;
        opts.onWritten(position);
        callback();
      }, callback);
    },
  });
}

async function writeAll(file: FileHandle, buffers: Buffer[], length: number, position: number): Promise<void> {
  let done = (await file.writev(buffers, position)).bytesWritten;
  if (done === length) return;
  // A short write (rare on a regular file): finish the rest one piece at a time.
  const rest = Buffer.concat(buffers).subarray(done);
  while (done < length) {
    const { bytesWritten } = await file.write(rest, done - (length - rest.length), length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * What a failed attempt leaves behind, and the error it ends with. An attempt that no longer owns
 * the work folder touches nothing: the file is its retry's now. A full disk, a wrong file or a
 * URL that will never work removes the partial file; anything else keeps it for a retry to resume.
 */
async function failed(
  attempt: Attempt,
  err: unknown,
  dest: string,
  opts: { keepPartial: boolean; neededBytes: number },
): Promise<unknown> {
  const { lease } = attempt;
  const cancel = cancellationSignal();
  if (!lease.owns()) return lease.signal.reason ?? err;
  const full = asOutOfSpace(err, lease.dir, path.basename(dest), opts.neededBytes);
  const permanent = full !== err || (err instanceof SnfVmcatcherError && err.permanent);
  if (permanent || (!opts.keepPartial && !cancel?.aborted)) await rm(dest, { force: true });
  // A cancelled or timed-out attempt keeps the partial file: the retry resumes it, or the
  // workflow's clean-up removes the folder.
  if (cancel?.aborted) return cancel.reason;
  return full;
}

interface DownloadRequest {
  url: URL;
  dest: string;
  insecureSsl?: boolean;
  credentialName?: string;
}

/**
 * The credential an HTTP download sends: the one the workflow names (`register-now --credential`),
 * else the rule for the URL's origin. A token goes over verified TLS only: a named one with an
 * http URL or `--insecure-ssl` is refused (the operator asked for both), and a rule does not
 * apply there (the download goes without it, and the log says why).
 */
function downloadCredential({ config, logger }: ActivityDeps, url: URL, input: AcquireInput): string | undefined {
  const { event } = input;
  const name = input.credentialName;
  if (name !== undefined) {
    if (url.protocol !== 'https:')
      throw new InvalidInputError(
        `credential '${name}' is never sent over plain ${url.protocol.slice(0, -1)} (${redact(url)}); use an https URL`,
      );
    if (input.insecureSsl)
      throw new InvalidInputError(
        `credential '${name}' is never sent to a host whose TLS certificate is not checked (--insecure-ssl, ${redact(url)})`,
      );
    return name;
  }
  const ruled = credentialNameFor(config, { url: event.uri, imageListId: event.imageListId });
  if (ruled !== undefined && input.insecureSsl) {
    logger.warn(
      { url: redact(url), credential: ruled },
      'the credential rule for this origin is not applied: TLS checks are off for this download (--insecure-ssl)',
    );
    return undefined;
  }
  return ruled;
}

/** The headers that carry a named credential (the secret is resolved here, on the worker, and never leaves it). */
async function credentialHeaders(config: Config, name: string | undefined): Promise<Record<string, string>> {
  if (!name) return {};
  const token = await resolveCredential(config, name);
  return { authorization: basicAuth(token, 'x-oauth-basic') };
}

/**
 * Where a previous attempt's file is good up to (its last heartbeat), the file cut back to that;
 * 0 (and no file) when there is nothing to resume.
 */
async function resumePoint(dest: string, size: number | undefined): Promise<number> {
  const previous = previousHeartbeat<Partial<DownloadProgress>>();
  const offset = previous?.offset;
  if (typeof offset === 'number' && Number.isInteger(offset) && offset > 0 && (size === undefined || offset <= size)) {
    const existing = await lstat(dest).catch(() => undefined);
    if (existing?.isFile() && existing.size >= offset) {
      await truncate(dest, offset);
      return offset;
    }
  }
  await rm(dest, { force: true });
  return 0;
}

interface RegistryBlobRequest {
  blob: RegistryBlob;
  dest: string;
  insecureSsl?: boolean;
  /** The registry login (`user:password` in security.credentials), resolved here by name. */
  credentialName?: string;
}

/**
 * A registry layer by digest (oci/blob.ts): the registry's auth (Basic or Bearer), resumed with
 * Range from where the previous attempt's heartbeat says the file is good, the size the manifest
 * declares, the sha256 checked in the same pass; a redirect to blob storage gets no credentials.
 */
async function downloadFromRegistry(
  attempt: Attempt,
  req: RegistryBlobRequest,
): Promise<{ bytes: number; sha256: string }> {
  const { config, logger } = attempt.deps;
  const { blob, dest } = req;
  const size = attempt.expected.size;
  const url = new URL(`v2/${blob.repository}/blobs/${blob.digest}`, blob.registry);
  const what = `the download of registry ${blob.registry.host} ${blob.repository}@${blob.digest}`;
  if (size === undefined) throw new InvalidInputError(`${what}: the event carries no size (the layer descriptor's)`);
  if (size > config.security.maxImageBytes) {
    throw new ImageIntegrityError(
      `${what}: the layer's ${size} bytes exceed the limit of ${config.security.maxImageBytes} bytes (security.maxImageBytes)`,
    );
  }
  const login = req.credentialName ? await resolveRegistryLogin(config, req.credentialName) : undefined;
  const offset = await resumePoint(dest, size);
  const space = await reserveSpace(attempt.lease.dir, size - offset, what, diskPolicy(config));
  const timeout = AbortSignal.timeout(config.worker.downloadTimeoutMs);
  const signal = AbortSignal.any([attempt.signal, timeout]);
  const client = new RegistryClient({
    registry: blob.registry,
    login,
    security: config.security,
    insecureTls: req.insecureSsl,
    ...registryAccess(config, blob.registry),
  });
  try {
    return await heartbeatingDownload(attempt, { url, dest, offset, total: size, timeout }, async (meter) => {
      logger.info(
        { url: redact(url), dest, offset },
        offset ? 'downloading the rest of the registry layer' : 'downloading the registry layer',
      );
      const got = await downloadBlob(client, blob.repository, { digest: blob.digest, size }, dest, {
        signal,
        onProgress: (bytes) => {
          meter.written = bytes;
        },
      });
      logger.info(
        { url: redact(url), bytes: got.bytes, resumedFrom: got.resumedFrom },
        'download complete, sha256 matches the digest',
      );
      return got;
    });
  } finally {
    space.release();
    await client.close();
  }
}

interface DownloadInProgress {
  url: URL;
  dest: string;
  /** Where this attempt started in the file (the resume point); the download updates it when the server decides otherwise. */
  offset: number;
  total?: number;
  timeout: AbortSignal;
}

/**
 * Runs a download while heartbeating its progress from a timer (also while the server is slow to
 * answer: the HTTP read timeout, not the heartbeat timeout, decides when a silent server has
 * failed). The heartbeat's `offset` is the resume point a retry reads back (previousHeartbeat);
 * after a failure, afterFailedDownload decides what stays for that retry.
 */
async function heartbeatingDownload<T>(
  attempt: Attempt,
  d: DownloadInProgress,
  run: (meter: Meter, d: DownloadInProgress) => Promise<T>,
): Promise<T> {
  const meter = new Meter('download', d.total);
  meter.written = d.offset;
  const progress = (): DownloadProgress => ({
    ...meter.progress(),
    offset: meter.written,
    ...(d.total === undefined ? {} : { total: d.total }),
  });
  const stopBeating = keepHeartbeating(progress);
  try {
    return await run(meter, d);
  } catch (err) {
    stopBeating();
    throw await afterFailedDownload(attempt, err, {
      ...d,
      resumeAt: (bytes) => {
        meter.written = bytes;
        heartbeat(progress());
      },
    });
  } finally {
    stopBeating();
  }
}

/** Downloads over http(s), resuming a previous attempt's partial file with a Range request. */
async function download(attempt: Attempt, req: DownloadRequest): Promise<FileDigest> {
  const { config, logger } = attempt.deps;
  const security = config.security;
  const { url, dest } = req;
  const { expected } = attempt;
  const where = redact(url);
  const what = `the download of ${where}`;

  if (expected.size !== undefined && expected.size > security.maxImageBytes) {
    throw new ImageIntegrityError(
      `${where}: hv:size ${expected.size} exceeds the limit of ${security.maxImageBytes} bytes (security.maxImageBytes)`,
    );
  }
  const headers = await credentialHeaders(config, req.credentialName);
  if (req.insecureSsl && url.protocol === 'https:') {
    logger.warn(
      { url: where, host: url.hostname },
      `TLS certificate and host name checks are OFF for host ${url.hostname} (insecureSsl); redirects to other hosts are verified`,
    );
  }

  const offset = await resumePoint(dest, expected.size);
  // hv:size known: refuse before the first request when the disk cannot hold the rest.
  let space: SpaceReservation | undefined =
    expected.size !== undefined
      ? await reserveSpace(attempt.lease.dir, expected.size - offset, what, diskPolicy(config))
      : undefined;
  const timeout = AbortSignal.timeout(config.worker.downloadTimeoutMs);
  const signal = AbortSignal.any([attempt.signal, timeout]);
  const dispatcher = createDispatcher({
    insecureTlsHost: req.insecureSsl ? url.hostname : undefined,
    connectTimeoutMs: security.connectTimeoutMs,
    readTimeoutMs: security.readTimeoutMs,
  });
  let source: Readable | undefined;
  try {
    return await heartbeatingDownload(
      attempt,
      { url, dest, offset, total: expected.size, timeout },
      async (meter, d) => {
        const opened = await openSource(attempt, {
          url,
          dest,
          offset,
          headers,
          dispatcher,
          signal,
          maxRedirects: security.maxRedirects,
          logger,
        });
        source = opened.source;
        const start = (d.offset = meter.written = opened.offset);
        if (!space && opened.declaredBytes)
          space = await reserveSpace(attempt.lease.dir, opened.declaredBytes, what, diskPolicy(config));
        const tooLarge = () =>
          expected.size !== undefined
            ? new ImageIntegrityError(
                `${where}: size mismatch: expected ${expected.size} bytes (hv:size), the server sends more`,
              )
            : new ImageIntegrityError(
                `${where} is larger than the limit of ${security.maxImageBytes} bytes (security.maxImageBytes)`,
              );
        const got = await writeHashed(
          attempt,
          signal,
          { what, source: opened.source, dest, start, maxBytes: expected.size ?? security.maxImageBytes, tooLarge },
          meter,
        ).catch((err: unknown) => {
          const code = (err as NodeJS.ErrnoException).code;
          throw err instanceof SnfVmcatcherError || attempt.signal.aborted || code === 'ENOSPC' || code === 'EDQUOT'
            ? err
            : describeFetchFailure(err, url);
        });
        logger.info(
          { url: where, bytes: got.bytes, fetchedThisAttempt: got.bytes - start, resumedFrom: start },
          'download complete',
        );
        checkIntegrity(where, expected, got);
        if (got.bytes === 0) throw new ImageIntegrityError(`${where} is empty (0 bytes)`);
        return got;
      },
    );
  } finally {
    space?.release();
    // An unread body would keep the dispatcher from closing.
    (source as Readable | undefined)?.destroy();
    await dispatcher.close().catch(() => undefined);
  }
}

/**
 * What to write from where: the server's response (openDownload) with the size it declares, or
 * nothing when a previous attempt got every byte and stopped while hashing.
 */
async function openSource(
  attempt: Attempt,
  o: OpenDownload,
): Promise<{ source: Readable; offset: number; declaredBytes?: number }> {
  if (attempt.expected.size !== undefined && o.offset === attempt.expected.size)
    return { source: Readable.from([]), offset: o.offset };
  o.logger.info(
    { url: redact(o.url), dest: o.dest, offset: o.offset },
    o.offset ? 'downloading the rest of the image' : 'downloading the image',
  );
  const { response, offset } = await openDownload(o);
  const declared = Number(response.headers['content-length']);
  return {
    source: response.body,
    offset,
    declaredBytes: Number.isFinite(declared) && declared > 0 ? declared : undefined,
  };
}

/**
 * After a failed download: log how far it got, keep the partial file when a retry can resume
 * from it (and tell that retry, with a last heartbeat, how far the file is good), and call a
 * timeout one. Returns the error to throw.
 */
async function afterFailedDownload(
  attempt: Attempt,
  err: unknown,
  f: { url: URL; dest: string; offset: number; timeout: AbortSignal; resumeAt: (bytes: number) => void },
): Promise<unknown> {
  const { config, logger } = attempt.deps;
  const where = redact(f.url);
  const onDisk = await stat(f.dest)
    .then((s) => s.size)
    .catch(() => 0);
  logger.warn(
    { url: where, fetchedThisAttempt: Math.max(0, onDisk - f.offset), error: (err as Error).message },
    'download failed',
  );
  const outcome = await failed(attempt, err, f.dest, {
    keepPartial: true,
    neededBytes: (attempt.expected.size ?? onDisk) - f.offset,
  });
  const kept = !(err instanceof SnfVmcatcherError && err.permanent) && !(outcome instanceof OutOfSpaceError);
  // After a network error, a timeout, a worker shutdown: the next attempt resumes where the file on disk is good.
  if (kept && attempt.lease.owns()) f.resumeAt(onDisk);
  if (outcome === err && f.timeout.aborted && !attempt.signal.aborted) {
    return new FetchError(
      `the download of ${where} timed out after ${config.worker.downloadTimeoutMs} ms (worker.downloadTimeoutMs)`,
    );
  }
  return outcome;
}

interface OpenDownload {
  url: URL;
  dest: string;
  offset: number;
  headers: Record<string, string>;
  dispatcher: ReturnType<typeof createDispatcher>;
  signal: AbortSignal;
  maxRedirects: number;
  logger: Logger;
}

/**
 * The response to download from, and the offset it starts at: a 206 at our offset resumes;
 * a server that cannot (416, 200, another range) gets a fresh request and the file starts over.
 */
async function openDownload(o: OpenDownload): Promise<{ response: HttpResponse; offset: number }> {
  const where = redact(o.url);
  const get = (extra: Record<string, string>) =>
    httpGet(o.url, {
      dispatcher: o.dispatcher,
      redirects: { maxRedirects: o.maxRedirects },
      headers: extra,
      credentialHeaders: o.headers,
      credentialsOverVerifiedTlsOnly: true,
      signal: o.signal,
    });
  let response: HttpResponse | undefined;
  if (o.offset) {
    response = await get({ range: `bytes=${o.offset}-` }).catch((err: unknown) => {
      // A range the server cannot satisfy: the partial file is not worth keeping.
      if (err instanceof FetchError && err.status === 416) return undefined;
      throw err;
    });
    if (response?.status === 206 && contentRangeStartsAt(response.headers['content-range'], o.offset))
      return { response, offset: o.offset };
    o.logger.info(
      { url: where, status: response?.status },
      'the server did not resume at our offset; downloading the whole image again',
    );
    await response?.body.dump().catch(() => undefined);
    await truncate(o.dest, 0);
  }
  response = await get({});
  if (response.status !== 200 && response.status !== 206) {
    await response.body.dump().catch(() => undefined);
    throw new FetchError(`GET ${where} answered HTTP ${response.status}, not the image`, {
      permanent: true,
      status: response.status,
    });
  }
  return { response, offset: 0 };
}

function contentRangeStartsAt(header: string | string[] | undefined, offset: number): boolean {
  const value = Array.isArray(header) ? header[0] : header;
  const match = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(value ?? '');
  return match !== null && Number(match[1]) === offset;
}
