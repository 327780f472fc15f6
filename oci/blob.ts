/**
 * Downloads a blob by digest into a file: resumed with Range from what the file already holds,
 * its size taken from the descriptor, its sha256 checked in the same pass as the write (the bytes
 * already on disk are hashed first). The registry's redirect to blob storage is followed by the
 * client without the credentials (core/http.ts). A blob whose bytes do not match its digest is
 * refused with ImageIntegrityError and its file removed. Faults that another attempt can mend are
 * transient FetchErrors, the file kept: a 206 whose Content-Range does not start where the file
 * ends, a 401/403 from blob storage (an expired signed URL; RegistryClient.get); a 401/403 from the
 * registry itself is the credential's, permanent.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FetchError, ImageIntegrityError, InvalidInputError } from '../core/errors.js';
import type { ImageEvent } from '../core/event.js';
import { describeFetchFailure, redact } from '../core/http.js';
import type { RegistryClient } from './client.js';
import type { Descriptor } from './manifest.js';

interface BlobDownload {
  bytes: number;
  /** Bytes that were already in the file and not fetched again. */
  resumedFrom: number;
  sha256: string;
}

async function hashFile(file: string, hash: ReturnType<typeof createHash>): Promise<void> {
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
}

export async function downloadBlob(
  client: RegistryClient,
  repository: string,
  blob: Pick<Descriptor, 'digest' | 'size'>,
  file: string,
  opts: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {},
): Promise<BlobDownload> {
  const what = `registry ${client.name} ${repository}@${blob.digest}`;
  const hash = createHash('sha256');
  let have = (await stat(file).catch(() => undefined))?.size ?? 0;
  if (have > blob.size) {
    await rm(file, { force: true });
    have = 0;
  }
  if (have > 0) await hashFile(file, hash);
  let written = have;
  if (have < blob.size) {
    const response = await client.get(`v2/${repository}/blobs/${blob.digest}`, {
      scope: client.scopeFor(repository),
      headers: have > 0 ? { range: `bytes=${have}-` } : {},
      signal: opts.signal,
    });
    if (response.status === 206) {
      // A range that does not start where the file ends would splice wrong bytes in: the answer is
      // the server's fault, not the blob's. Transient: the next attempt asks for the range again.
      const range = response.headers['content-range'];
      const start = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(
        String(Array.isArray(range) ? range[0] : (range ?? '')).trim(),
      );
      if (!start || Number(start[1]) !== have) {
        await response.body.dump().catch(() => undefined);
        throw new FetchError(
          `${what}: asked for bytes from ${have}, the answer's Content-Range is '${String(range ?? '(none)')}'; the range is asked again`,
          { status: 206 },
        );
      }
    }
    // A server that ignores Range sends everything again: start the file over.
    const append = have > 0 && response.status === 206;
    const pass = append ? hash : createHash('sha256');
    if (!append) written = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        written += chunk.length;
        if (written > blob.size) {
          callback(
            new ImageIntegrityError(
              `${what}: the registry sent more than the ${blob.size} bytes the manifest declares`,
            ),
          );
          return;
        }
        pass.update(chunk);
        opts.onProgress?.(written);
        callback(null, chunk);
      },
    });
    try {
      await pipeline(response.body, counter, createWriteStream(file, { flags: append ? 'a' : 'w' }), {
        signal: opts.signal,
      });
    } catch (err) {
      if (err instanceof ImageIntegrityError) {
        await rm(file, { force: true });
        throw err;
      }
      throw describeFetchFailure(err, response.url);
    }
    if (!append) return finish(what, file, blob, written, 0, pass);
  }
  return finish(what, file, blob, written, have, hash);
}

async function finish(
  what: string,
  file: string,
  blob: Pick<Descriptor, 'digest' | 'size'>,
  bytes: number,
  resumedFrom: number,
  hash: ReturnType<typeof createHash>,
): Promise<BlobDownload> {
  if (bytes !== blob.size) {
    // Short: the connection ended early; the next attempt resumes from here.
    throw new FetchError(`${what}: got ${bytes} of ${blob.size} bytes`);
  }
  const sha256 = hash.digest('hex');
  if (`sha256:${sha256}` !== blob.digest) {
    await rm(file, { force: true });
    throw new ImageIntegrityError(
      `${what}: the blob's bytes have sha256 ${sha256}, not the digest the manifest names; refused`,
    );
  }
  return { bytes, resumedFrom, sha256 };
}

/** A registry layer by digest: the registry's base, the repository and the digest the event's URI names. */
export interface RegistryBlob {
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
