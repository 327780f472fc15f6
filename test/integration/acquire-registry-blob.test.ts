import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { ApplicationFailure } from '@temporalio/common';
import { createHostActivities } from '../../activities/host.js';
import type { AcquiredImage, DownloadProgress } from '../../activities/types.js';
import type { ImageEvent } from '../../core/event.js';
import { asRunByWorker, workerActivityEnv } from '../support/activities.js';
import { startTestServer } from '../support/http-server.js';
import { startImageServer, type ImageServer } from '../support/image-server.js';
import { pipelineConfig, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const blobPath = (repository: string, bytes: Buffer) => `/v2/${repository}/blobs/sha256:${sha256(bytes)}`;

/**
 * The acquire step with an event from a registry (oci/annotations.ts): the layer is fetched by
 * digest through oci/blob.ts, resumed from the last heartbeat with Range, its sha256 checked in the
 * same pass. The server here answers the distribution API's blob path without asking for a login
 * (an anonymous registry); auth and redirects against a real registry are in oci-registry.test.ts
 * and test/e2e/oci-subscription.test.ts.
 */
describe('acquireImage pulls a registry layer by digest', () => {
  let server: ImageServer;
  let root: Awaited<ReturnType<typeof tempDir>>;
  let work: string;
  let activities: ReturnType<typeof createHostActivities>;
  const event = (bytes: Buffer, fields: Partial<ImageEvent> = {}): ImageEvent => ({
    origin: 'registry',
    imageListId: '127.0.0.1/egi_vm_images',
    imageId: 'ubuntu',
    uri: server.at(blobPath('egi_vm_images/ubuntu', bytes)),
    size: bytes.length,
    checksumSha256: sha256(bytes),
    extra: {},
    ...fields,
  });

  beforeAll(async () => {
    server = await startImageServer();
    root = await tempDir('snf-acquire-registry-');
    work = path.join(root.dir, 'work');
    activities = asRunByWorker(createHostActivities({ config: pipelineConfig(work), logger: quietLogger }));
  });

  afterAll(async () => {
    await server.close();
    await root.cleanup();
  });

  test('an interrupted layer download resumes from the last heartbeat and is checked against its digest', async () => {
    const layer = randomBytes(3 * 1024 * 1024);
    const cut = 1024 * 1024;
    const p = blobPath('egi_vm_images/ubuntu', layer);
    server.route(p, { body: layer, cutAfterBytes: cut, cuts: 1 });
    const input = { workflowId: 'registry-resume', event: event(layer) };

    const first = workerActivityEnv();
    const beats: DownloadProgress[] = [];
    first.on('heartbeat', (d: DownloadProgress) => beats.push(d));
    await expect(first.run(activities.acquireImage, input)).rejects.toMatchObject({ nonRetryable: false });
    const last = beats[beats.length - 1];
    expect(last.total).toBe(layer.length);
    expect(last.offset).toBeGreaterThan(0);
    expect(last.offset).toBeLessThanOrEqual(cut);

    const retry = workerActivityEnv({ heartbeatDetails: last, attempt: 2 });
    const got = (await retry.run(activities.acquireImage, input)) as AcquiredImage;
    expect(got).toMatchObject({ source: 'download', bytes: layer.length, sha256: sha256(layer) });
    expect((await readFile(got.path)).equals(layer)).toBe(true);
    expect(server.ranges[server.ranges.length - 1]).toBe(`bytes=${last.offset}-`);
    expect(server.bytesSent.get(p)).toBe(cut + layer.length - last.offset);
  });

  test('bytes that are not the digest: refused non-retryable, naming the registry and the digest, no file left', async () => {
    const layer = randomBytes(64 * 1024);
    server.route(blobPath('egi_vm_images/ubuntu', layer), { body: randomBytes(layer.length) });
    const failure = (await activities
      .acquireImage({ workflowId: 'registry-bad', event: event(layer) })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure.nonRetryable).toBe(true);
    expect(failure.type).toBe('ImageIntegrityError');
    expect(failure.message).toContain(
      `registry 127.0.0.1:${new URL(server.at('/')).port} egi_vm_images/ubuntu@sha256:${sha256(layer)}`,
    );
    const dir = (await readdir(work)).find((d) => d.startsWith('registry-bad-'))!;
    expect(await readdir(path.join(work, dir))).toEqual(['.workflow.json']);
  });

  test('more bytes than the descriptor declares: refused non-retryable', async () => {
    const layer = randomBytes(64 * 1024);
    server.route(blobPath('egi_vm_images/ubuntu', layer), { body: Buffer.concat([layer, randomBytes(10)]) });
    await expect(activities.acquireImage({ workflowId: 'registry-long', event: event(layer) })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringContaining(`more than the ${layer.length} bytes the manifest declares`),
    });
  });

  test('a registry event whose URI is not the blob of its own digest is refused before any request', async () => {
    const layer = randomBytes(1024);
    const before = server.ranges.length;
    await expect(
      activities.acquireImage({
        workflowId: 'registry-foreign',
        event: event(layer, { uri: server.at('/v2/egi_vm_images/ubuntu/blobs/sha256:' + 'a'.repeat(64)) }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringContaining('is not the blob of its layer') });
    expect(server.ranges.length).toBe(before);
  });

  test("blob storage's 403 (an expired signed URL) is retried; the registry's own 403 is the credential's, not retried", async () => {
    const layer = randomBytes(4096);
    const p = blobPath('egi_vm_images/ubuntu', layer);
    // Storage on another host name than the registry's, as Harbor on S3 redirects to it.
    const storage = await startTestServer({
      hostname: 'localhost',
      routes: { '/signed': { status: 403, body: 'expired' } },
    });
    const registry = await startTestServer({ routes: { [p]: { redirect: storage.at('/signed'), status: 307 } } });
    try {
      const expired = (await activities
        .acquireImage({ workflowId: 'registry-expired', event: event(layer, { uri: registry.at(p) }) })
        .catch((e: unknown) => e)) as ApplicationFailure;
      expect(expired.nonRetryable).toBe(false);
      expect(expired.message).toContain(`localhost:${storage.port}, where the registry redirected`);
      expect(storage.requests.map((r) => r.headers.authorization)).toEqual([undefined]);
    } finally {
      await registry.close();
      await storage.close();
    }
    server.route(p, { status: 403 });
    const denied = (await activities
      .acquireImage({ workflowId: 'registry-denied', event: event(layer) })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(denied.nonRetryable).toBe(true);
    expect(denied.message).toContain('does not allow anonymous access');
  });

  test('a sha512 given beside the digest is checked too: a wrong one is refused and the layer removed', async () => {
    const layer = randomBytes(256 * 1024);
    server.route(blobPath('egi_vm_images/ubuntu', layer), { body: layer });
    const sha512 = createHash('sha512').update(layer).digest('hex');
    const got = (await activities.acquireImage({
      workflowId: 'registry-sha512-ok',
      event: event(layer, { checksumSha512: sha512 }),
    })) as AcquiredImage;
    expect(got).toMatchObject({ bytes: layer.length, sha256: sha256(layer) });
    const failure = (await activities
      .acquireImage({ workflowId: 'registry-sha512-bad', event: event(layer, { checksumSha512: 'cd'.repeat(64) }) })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure).toMatchObject({ nonRetryable: true, type: 'ImageIntegrityError' });
    expect(failure.message).toContain(
      `sha512 mismatch: expected ${'cd'.repeat(64)} (VMCATCHER_EVENT_SL_CHECKSUM_SHA512), got ${sha512}`,
    );
    const dir = (await readdir(work)).find((d) => d.startsWith('registry-sha512-bad-'))!;
    expect((await readdir(path.join(work, dir))).filter((f) => f !== '.workflow.json')).toEqual([]);
  });
});
