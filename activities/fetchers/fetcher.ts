/**
 * What every fetcher of the acquire step shares: the attempt it runs in, what the event promised
 * about the file, and the checks of the bytes against that promise. A fetcher is one way to get an
 * image file (activities/fetchers/index.ts lists them).
 */
import { ImageIntegrityError, InvalidInputError } from '../../core/errors.js';
import { EVENT_FIELDS, type ImageEvent } from '../../core/event.js';
import { redact } from '../../core/http.js';
import type { ActivityDeps } from '../../runtime/deps.js';
import type { AcquireInput, AcquiredImage } from '../types.js';
import type { WorkDirLease } from '../workspace.js';

/** What the event promised about the file. */
interface Expected {
  size?: number;
  sha512?: string;
  sha256?: string;
}

/** One attempt of the acquire step: who it is, what it holds, what stops it. */
export interface Attempt {
  deps: ActivityDeps;
  lease: WorkDirLease;
  expected: Expected;
  /** Aborted when the activity is cancelled (or times out) or a newer attempt takes the folder over. */
  signal: AbortSignal;
}

/** One way to get an image file into the work folder. */
export interface Fetcher {
  /** Whether this fetcher gets the event's image (the first that does, in activities/fetchers/index.ts, is used). */
  takes(event: ImageEvent): boolean;
  fetch(job: FetchJob): Promise<Omit<AcquiredImage, 'fileName'>>;
}

interface FetchJob {
  attempt: Attempt;
  input: AcquireInput;
  /** The name the image was published under (publishedFileName). */
  fileName?: string;
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

/** The file's size against hv:size before reading a byte of it: a wrong file costs nothing. */
export function checkSizeFirst(what: string, expected: Expected, bytes: number): void {
  if (expected.size !== undefined && expected.size !== bytes) {
    throw new ImageIntegrityError(
      `${what}: size mismatch: expected ${expected.size} bytes (hv:size), the file has ${bytes}`,
    );
  }
}

export function imageUrl(event: ImageEvent): URL {
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
