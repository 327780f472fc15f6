/** A registry layer by digest (oci/blob.ts), for the events a registry subscription delivers. */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { credentialNameFor } from '../../core/credentials.js';
import { ImageIntegrityError, InvalidInputError } from '../../core/errors.js';
import type { ImageEvent } from '../../core/event.js';
import { redact } from '../../core/http.js';
import { keepHeartbeating } from '../../runtime/heartbeats.js';
import { downloadBlob, registryBlobOf, type RegistryBlob } from '../../oci/blob.js';
import { RegistryClient, registryAccess, resolveRegistryLogin } from '../../oci/client.js';
import { diskPolicy, reserveSpace } from '../disk.js';
import { trailingHasher } from '../trailing-hash.js';
import { safeFileName } from '../workspace.js';
import { checkIntegrity, imageUrl, type Attempt, type Fetcher } from './fetcher.js';
import { heartbeatingDownload, resumePoint } from './http.js';

/** An event whose URI is its own registry layer's blob (registryBlobOf refuses a registry event whose URI is not). */
export const registryBlobFetcher: Fetcher = {
  takes: (event: ImageEvent) => registryBlobOf(event, imageUrl(event)) !== undefined,
  async fetch({ attempt, input, fileName }) {
    const { deps, lease } = attempt;
    const { event } = input;
    const blob = registryBlobOf(event, imageUrl(event))!;
    const dest = path.join(lease.dir, safeFileName(fileName));
    const credentialName =
      input.credentialName ??
      credentialNameFor(deps.config, {
        url: event.uri,
        imageListId: event.imageListId,
        insecureTls: input.insecureSsl,
      });
    const pulled = await downloadFromRegistry(attempt, {
      blob,
      dest,
      insecureSsl: input.insecureSsl,
      credentialName,
    });
    // The sha256 is the digest, checked while downloading; a sha512 too, if the event gives one.
    if (attempt.expected.sha512) await verifyWholeFile(attempt, `the registry layer ${blob.digest}`, dest, pulled);
    return { workDir: lease.dir, path: dest, bytes: pulled.bytes, sha256: pulled.sha256, source: 'download' };
  },
};

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
