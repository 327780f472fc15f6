/**
 * Fetching over http(s), and the writing code every fetcher that copies bytes shares: a stream
 * written at explicit positions with its sha512 (and sha256) computed on a thread behind the
 * writes, heartbeats that carry the resume point, and what a failed attempt leaves behind.
 * Downloads resume a previous attempt's partial file with a Range request.
 */
import { lstat, open, rm, stat, truncate, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../../core/config.js';
import { credentialNameFor, resolveCredential } from '../../core/credentials.js';
import {
  FetchError,
  ImageIntegrityError,
  InvalidInputError,
  OutOfSpaceError,
  SnfVmcatcherError,
} from '../../core/errors.js';
import type { ImageEvent } from '../../core/event.js';
import type { Logger } from '../../core/logging.js';
import {
  basicAuth,
  createDispatcher,
  describeFetchFailure,
  httpGet,
  redact,
  type HttpResponse,
} from '../../core/http.js';
import { cancellationSignal, heartbeat, previousHeartbeat } from '../../runtime/context.js';
import { keepHeartbeating, type StepProgress } from '../../runtime/heartbeats.js';
import type { ActivityDeps } from '../../runtime/deps.js';
import { asOutOfSpace, diskPolicy, reserveSpace, type SpaceReservation } from '../disk.js';
import { trailingHasher, type FileDigest, type TrailingHasher } from '../trailing-hash.js';
import type { AcquireInput, DownloadProgress } from '../types.js';
import { safeFileName } from '../workspace.js';
import { checkIntegrity, imageUrl, type Attempt, type Fetcher } from './fetcher.js';

/** Any http(s) URL: the last fetcher, after the ones that know the event better. */
export const httpFetcher: Fetcher = {
  takes: (event: ImageEvent) => ['http:', 'https:'].includes(imageUrl(event).protocol),
  async fetch({ attempt, input, fileName }) {
    const { deps, lease } = attempt;
    const url = imageUrl(input.event);
    const dest = path.join(lease.dir, safeFileName(fileName));
    const credentialName = downloadCredential(deps, url, input);
    const got = await download(attempt, { url, dest, insecureSsl: input.insecureSsl, credentialName });
    return { workDir: lease.dir, path: dest, ...got, source: 'download' };
  },
};

/** Bytes the writer lets pile up before it pushes back on the network or the source file. */
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

/** How far a step that writes and hashes a file has got: what its heartbeats report. */
export class Meter {
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
export async function writeHashed(
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
export async function failed(
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
export async function resumePoint(dest: string, size: number | undefined): Promise<number> {
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
export async function heartbeatingDownload<T>(
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
