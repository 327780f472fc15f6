import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, statfs, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ApplicationFailure } from '@temporalio/common';
import type { ImageEvent } from '../../core/event.js';
import { createHostActivities } from '../../activities/host.js';
import { asRunByWorker, workerActivityEnv } from '../support/activities.js';
import { removeWorkDir } from '../../activities/workspace.js';
import type { Config } from '../../core/config.js';
import { InvalidInputError } from '../../core/errors.js';
import type { AcquiredImage, DownloadProgress } from '../../activities/types.js';
import { startImageServer, type ImageServer } from '../support/image-server.js';
import { parseConfig } from '../../core/config.js';
import { pipelineConfig, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const event = (fields: Partial<ImageEvent>): ImageEvent => ({
  origin: 'image-list',
  imageId: 'img-1',
  extra: {},
  ...fields,
});

describe('acquireImage gets the image into the work folder, verified', () => {
  let server: ImageServer;
  let root: Awaited<ReturnType<typeof tempDir>>;
  let work: string;
  let cache: string;
  let outside: string;
  let activities: ReturnType<typeof createHostActivities>;
  let config: Config;
  const image = randomBytes(4 * 1024 * 1024);

  beforeAll(async () => {
    server = await startImageServer();
    root = await tempDir('snf-acquire-');
    work = path.join(root.dir, 'work');
    cache = path.join(root.dir, 'cache');
    outside = path.join(root.dir, 'outside');
    await mkdir(cache, { recursive: true });
    await mkdir(outside, { recursive: true });
    // These tests fetch images without checksums on purpose (the transfer is what they check);
    // 'every checksum an event carries is checked' below runs with the default, which refuses them.
    config = pipelineConfig(work, {
      vmcatcherCacheFolders: [cache],
      allowedFileFolders: [cache],
      credentials: { appdb: 'sekrit-token-123' },
      allowUnverifiedImages: true,
    });
    activities = asRunByWorker(createHostActivities({ config, logger: quietLogger }));
    server.route('/image.qcow2', { body: image });
  });

  afterAll(async () => {
    await server.close();
    await root.cleanup();
  });

  test('a download with the right sha512 and size is kept, with its hash and published name', async () => {
    const got = await activities.acquireImage({
      workflowId: 'ok',
      event: event({ uri: server.at('/image.qcow2'), size: image.length, checksumSha512: sha512(image) }),
    });
    expect(got).toMatchObject({
      source: 'download',
      bytes: image.length,
      sha512: sha512(image),
      fileName: 'image.qcow2',
    });
    expect((await readFile(got.path)).equals(image)).toBe(true);
  });

  test('a sha512 mismatch fails non-retryable, names both sums, and leaves no file', async () => {
    const wrong = 'ab'.repeat(64);
    const failure = (await activities
      .acquireImage({ workflowId: 'bad-sum', event: event({ uri: server.at('/image.qcow2'), checksumSha512: wrong }) })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure.nonRetryable).toBe(true);
    expect(failure.type).toBe('ImageIntegrityError');
    expect(failure.message).toContain(`expected ${wrong}`);
    expect(failure.message).toContain(`got ${sha512(image)}`);
    const dirs = await readdir(work);
    const dir = dirs.find((d) => d.startsWith('bad-sum-'))!;
    // Only the folder's owner marker (for the sweep) is left; the workflow's clean-up removes the folder.
    expect(await readdir(path.join(work, dir))).toEqual(['.workflow.json']);
  });

  test('a size mismatch fails non-retryable', async () => {
    await expect(
      activities.acquireImage({
        workflowId: 'bad-size',
        event: event({ uri: server.at('/image.qcow2'), size: image.length - 1 }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringMatching(/size mismatch/) });
  });

  test.each([
    [404, true],
    [410, true],
    [403, true],
    [503, false],
  ])('HTTP %i fails with nonRetryable=%s', async (status, nonRetryable) => {
    server.route(`/status-${status}`, { status });
    await expect(
      activities.acquireImage({
        workflowId: `status-${status}`,
        event: event({ uri: server.at(`/status-${status}`) }),
      }),
    ).rejects.toMatchObject({
      nonRetryable,
      message: expect.stringContaining(`HTTP ${status}`),
    });
  });

  test('a connection refused is transient', async () => {
    await expect(
      activities.acquireImage({ workflowId: 'refused', event: event({ uri: 'http://127.0.0.1:1/x.img' }) }),
    ).rejects.toMatchObject({
      nonRetryable: false,
    });
  });

  test('an interrupted download resumes from the last heartbeat and fetches only the remaining bytes', async () => {
    const body = randomBytes(4 * 1024 * 1024);
    const cut = 1536 * 1024;
    server.route('/resume.vmdk', { body, cutAfterBytes: cut, cuts: 1 });
    const input = {
      workflowId: 'resume',
      event: event({ uri: server.at('/resume.vmdk'), size: body.length, checksumSha512: sha512(body) }),
    };

    const first = workerActivityEnv();
    const beats: DownloadProgress[] = [];
    first.on('heartbeat', (d: DownloadProgress) => beats.push(d));
    await expect(first.run(activities.acquireImage, input)).rejects.toMatchObject({ nonRetryable: false });
    const last = beats[beats.length - 1];
    expect(last.total).toBe(body.length);
    expect(last.offset).toBeGreaterThan(0);
    expect(last.offset).toBeLessThanOrEqual(cut);
    expect(server.bytesSent.get('/resume.vmdk')).toBe(cut);

    const retry = workerActivityEnv({ heartbeatDetails: last, attempt: 2 });
    const got = (await retry.run(activities.acquireImage, input)) as AcquiredImage;
    expect(got.sha512).toBe(sha512(body));
    expect((await readFile(got.path)).equals(body)).toBe(true);
    expect(server.ranges[server.ranges.length - 1]).toBe(`bytes=${last.offset}-`);
    // The second attempt fetched only what the first one had not written.
    expect(server.bytesSent.get('/resume.vmdk')).toBe(cut + body.length - last.offset);
  });

  test('a server that ignores Range gets a full download, still verified', async () => {
    const body = randomBytes(256 * 1024);
    server.route('/norange.img', { body, ignoreRange: true });
    const input = {
      workflowId: 'norange',
      event: event({ uri: server.at('/norange.img'), checksumSha512: sha512(body) }),
    };
    await activities.acquireImage(input); // leaves the file where a resumed attempt would find it
    const retry = workerActivityEnv({ heartbeatDetails: { offset: 1000 } });
    const got = (await retry.run(activities.acquireImage, input)) as AcquiredImage;
    expect(got.sha512).toBe(sha512(body));
    expect(got.bytes).toBe(body.length);
  });

  // A named credential's HTTP Basic token:x-oauth-basic goes over https only: test/e2e/private-image.test.ts
  // shows it sent (a real TLS server the worker trusts), 'a credential rule never sends its token over
  // plain http' below shows it refused over http.

  test('a vmcatcher cache file in an allowed folder is copied out and verified', async () => {
    const body = randomBytes(64 * 1024);
    await writeFile(path.join(cache, 'c0ffee-uuid'), body);
    const got = await activities.acquireImage({
      workflowId: 'cache',
      event: event({
        origin: 'vmcatcher',
        type: 'AvailablePostfix',
        cacheDir: cache,
        filename: 'c0ffee-uuid',
        checksumSha512: sha512(body),
        size: body.length,
      }),
    });
    expect(got).toMatchObject({ source: 'vmcatcher-cache', bytes: body.length, sha512: sha512(body) });
    expect(path.dirname(got.path).startsWith(work)).toBe(true);
    expect((await readFile(got.path)).equals(body)).toBe(true);
  });

  test('a vmcatcher cache folder outside the allowed ones is refused', async () => {
    await writeFile(path.join(outside, 'secret'), 'root:x:0:0');
    await expect(
      activities.acquireImage({
        workflowId: 'cache-out',
        event: event({ origin: 'vmcatcher', type: 'AvailablePostfix', cacheDir: outside, filename: 'secret' }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringMatching(/outside the allowed folders/) });
  });

  test('with no vmcatcher cache folder configured, a cache event naming any folder (here /etc) is refused', async () => {
    const strict = asRunByWorker(
      createHostActivities({ config: pipelineConfig(work, { vmcatcherCacheFolders: [] }), logger: quietLogger }),
    );
    await expect(
      strict.acquireImage({
        workflowId: 'cache-etc',
        event: event({ origin: 'vmcatcher', type: 'AvailablePostfix', cacheDir: '/etc', filename: 'passwd' }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringMatching(/no folder is allowed/) });
  });

  test('a symlink in the cache pointing outside is refused', async () => {
    await symlink(path.join(outside, 'secret'), path.join(cache, 'link-uuid'));
    await expect(
      activities.acquireImage({
        workflowId: 'cache-link',
        event: event({ origin: 'vmcatcher', type: 'AvailablePostfix', cacheDir: cache, filename: 'link-uuid' }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringMatching(/outside the allowed folders/) });
  });

  test('a cache file name with a path in it is refused', async () => {
    await expect(
      activities.acquireImage({
        workflowId: 'cache-dots',
        event: event({ origin: 'vmcatcher', type: 'AvailablePostfix', cacheDir: cache, filename: '../outside/secret' }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true });
  });

  test('file: URLs work inside allowed folders (percent-decoded) and are refused outside', async () => {
    const body = randomBytes(1024);
    await writeFile(path.join(cache, 'my image.img'), body);
    const got = await activities.acquireImage({
      workflowId: 'file-ok',
      event: event({ uri: `file://${cache}/my%20image.img` }),
    });
    expect(got).toMatchObject({ source: 'file', path: path.join(cache, 'my image.img'), sha512: sha512(body) });
    await expect(
      activities.acquireImage({ workflowId: 'file-out', event: event({ uri: `file://${outside}/secret` }) }),
    ).rejects.toMatchObject({
      nonRetryable: true,
    });
  });

  test("cleanupWorkspace removes the workflow's work folder and is idempotent; folders outside the working folder are refused", async () => {
    await activities.acquireImage({ workflowId: 'cleanup', event: event({ uri: server.at('/image.qcow2') }) });
    expect((await readdir(work)).some((d) => d.startsWith('cleanup-'))).toBe(true);
    await activities.cleanupWorkspace({ workflowId: 'cleanup' });
    await activities.cleanupWorkspace({ workflowId: 'cleanup' });
    expect((await readdir(work)).some((d) => d.startsWith('cleanup-'))).toBe(false);
    await expect(removeWorkDir(config, outside)).rejects.toBeInstanceOf(InvalidInputError);
  });
});

describe('acquireImage under heartbeat timeouts, stale attempts, a full disk and credential rules', () => {
  let server: ImageServer;
  let root: Awaited<ReturnType<typeof tempDir>>;
  let work: string;
  let config: Config;
  let activities: ReturnType<typeof createHostActivities>;

  beforeAll(async () => {
    server = await startImageServer();
    root = await tempDir('snf-acquire-scale-');
    work = path.join(root.dir, 'work');
    // Unverified on purpose: these tests are about the transfer, not the checksum policy.
    config = pipelineConfig(work, { credentials: { appdb: 'rule-token-456' }, allowUnverifiedImages: true });
    activities = asRunByWorker(createHostActivities({ config, logger: quietLogger }));
  });

  afterAll(async () => {
    await server.close();
    await root.cleanup();
  });

  const filesIn = async (workflowId: string) => {
    const dir = (await readdir(work)).find((d) => d.startsWith(`${workflowId}-`));
    return dir ? (await readdir(path.join(work, dir))).filter((f) => f !== '.workflow.json') : [];
  };

  test('heartbeats come from a timer, with step and byte counts, also while the server has not answered yet', async () => {
    const body = randomBytes(1024 * 1024);
    server.route('/late.img', { body, delayMs: 1500 });
    // A heartbeat timeout of 400 ms: one beat every 100 ms (a quarter of it).
    const env = workerActivityEnv({ heartbeatTimeoutMs: 400 });
    const beats: DownloadProgress[] = [];
    env.on('heartbeat', (d: DownloadProgress) => beats.push(d));
    const got = (await env.run(activities.acquireImage, {
      workflowId: 'late',
      event: event({ uri: server.at('/late.img'), size: body.length, checksumSha512: sha512(body) }),
    })) as AcquiredImage;
    expect(got.sha512).toBe(sha512(body));
    const beforeHeaders = beats.filter((b) => b.bytesDone === 0);
    // 1.5 s of silence at one beat per 100 ms: well over 5 beats, none of them from bytes flowing.
    expect(beforeHeaders.length).toBeGreaterThanOrEqual(5);
    expect(beforeHeaders[0]).toMatchObject({
      step: 'download',
      bytesDone: 0,
      bytesTotal: body.length,
      offset: 0,
      total: body.length,
    });
  });

  test('a stale attempt (replaced by its retry, then told NOT_FOUND) neither deletes nor writes the file its retry is writing', async () => {
    const body = randomBytes(16 * 1024 * 1024);
    // About 2.5 s for the whole body: the retry starts while the first attempt is mid-way.
    server.route('/stale.img', { body, chunkBytes: 128 * 1024, chunkDelayMs: 20 });
    const input = {
      workflowId: 'stale',
      event: event({ uri: server.at('/stale.img'), size: body.length, checksumSha512: sha512(body) }),
    };

    const first = workerActivityEnv({ heartbeatTimeoutMs: 400 });
    const beats: DownloadProgress[] = [];
    first.on('heartbeat', (d: DownloadProgress) => beats.push(d));
    const firstRun = first.run(activities.acquireImage, input).then(
      () => 'completed',
      (err: unknown) => err,
    );
    while (!beats.some((b) => b.offset >= 2 * 1024 * 1024)) await new Promise((r) => setTimeout(r, 20));
    const last = beats[beats.length - 1];

    // Temporal gave up on the first attempt (heartbeat timeout) but it is still running: its retry
    // lands on the same worker, and the stale attempt hears NOT_FOUND on its next heartbeat.
    const retry = workerActivityEnv({ heartbeatTimeoutMs: 400, heartbeatDetails: last, attempt: 2 });
    const retryRun = retry.run(activities.acquireImage, input) as Promise<AcquiredImage>;
    first.cancel('NOT_FOUND');
    const [firstOutcome, got] = await Promise.all([firstRun, retryRun]);

    expect(firstOutcome).not.toBe('completed');
    expect(got.sha512).toBe(sha512(body));
    // The file is whole and right after both attempts have ended.
    expect((await readFile(got.path)).equals(body)).toBe(true);
    // The retry resumed from the stale attempt's last heartbeat.
    expect(server.ranges[server.ranges.length - 1]).toBe(`bytes=${last.offset}-`);
  });

  test('an attempt that died while hashing a complete file hashes it again without fetching anything', async () => {
    const body = randomBytes(512 * 1024);
    server.route('/complete.img', { body });
    const input = {
      workflowId: 'complete',
      event: event({ uri: server.at('/complete.img'), size: body.length, checksumSha512: sha512(body) }),
    };
    await activities.acquireImage(input);
    const requests = server.ranges.length;
    const retry = workerActivityEnv({
      heartbeatDetails: { step: 'download: sha512', offset: body.length, total: body.length },
      attempt: 2,
    });
    const got = (await retry.run(activities.acquireImage, input)) as AcquiredImage;
    expect(got).toMatchObject({ bytes: body.length, sha512: sha512(body) });
    expect(server.ranges.length).toBe(requests);
  });

  test('a download whose hv:size exceeds the free space fails at once with OutOfSpaceError naming needed and free bytes, writing nothing', async () => {
    await mkdir(work, { recursive: true });
    const fs = await statfs(work);
    const free = fs.bavail * fs.bsize;
    // Everything free right now is the reserve: a 1 GiB image cannot fit unless 1 GiB is freed meanwhile.
    const full = parseConfig(
      { worker: { workingFolder: work, diskReserveBytes: free, diskReservePercent: 0 } },
      'test',
    );
    const strict = asRunByWorker(createHostActivities({ config: full, logger: quietLogger }));
    server.route('/big.img', { body: Buffer.alloc(16) });
    const requests = server.ranges.length;
    const size = 1024 ** 3;
    const failure = (await strict
      .acquireImage({
        workflowId: 'nospace',
        event: event({ uri: server.at('/big.img'), size, checksumSha512: 'ab'.repeat(64) }),
      })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure.type).toBe('OutOfSpaceError');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toMatch(new RegExp(`need ${size} bytes, \\d+ free`));
    const details = failure.details?.[0] as { neededBytes: number; freeBytes: number };
    expect(details.neededBytes).toBe(size);
    expect(details.freeBytes).toBeGreaterThan(0);
    expect(server.ranges.length).toBe(requests);
    expect(await filesIn('nospace')).toEqual([]);
  });

  test('a credential rule never sends its token over plain http: neither a rule for this host (any spelling) nor a named credential', async () => {
    const port = new URL(server.url).port;
    const rules = parseConfig(
      {
        worker: { workingFolder: work },
        security: {
          allowUnverifiedImages: true,
          credentials: { appdb: 'rule-token-456', other: 'other-token' },
          credentialRules: [
            // The old spelling (https://127.0.0.1 on 443), and this very host and port over https.
            { host: '127.0.0.1', credential: 'other' },
            { origin: `https://127.0.0.1:${port}`, credential: 'appdb' },
          ],
        },
      },
      'test',
    );
    const withRules = asRunByWorker(createHostActivities({ config: rules, logger: quietLogger }));
    server.route('/private.img', { body: Buffer.from('private image') });
    const before = server.authorizations.length;
    // A queued event naming the rule's host over http: downloaded without any Authorization header.
    await withRules.acquireImage({
      workflowId: 'rule-http',
      event: event({ origin: 'message', uri: server.at('/private.img'), imageListId: 'appdb-list' }),
    });
    expect(server.authorizations.length).toBeGreaterThan(before);
    expect(server.authorizations.slice(before)).toEqual(server.authorizations.slice(before).map(() => undefined));
    // A credential named for an http URL is refused before anything is sent.
    const requests = server.ranges.length;
    await expect(
      withRules.acquireImage({
        workflowId: 'named-http',
        event: event({ uri: server.at('/private.img'), imageListId: 'private-list' }),
        credentialName: 'appdb',
      }),
    ).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringContaining("credential 'appdb' is never sent over plain http"),
    });
    expect(server.ranges.length).toBe(requests);
  });
});

describe('every checksum an event carries is checked, whatever its origin', () => {
  let server: ImageServer;
  let root: Awaited<ReturnType<typeof tempDir>>;
  let work: string;
  let cache: string;
  let activities: ReturnType<typeof createHostActivities>;
  const image = randomBytes(2 * 1024 * 1024);
  // The sha256 another image (a registry layer) is known by: what an attacker copies into a queued event.
  const othersSha256 = sha256(randomBytes(64));

  beforeAll(async () => {
    server = await startImageServer();
    root = await tempDir('snf-acquire-sums-');
    work = path.join(root.dir, 'work');
    cache = path.join(root.dir, 'cache');
    await mkdir(cache, { recursive: true });
    await writeFile(path.join(cache, 'cached-uuid'), image);
    // The default policy: security.allowUnverifiedImages is not set.
    const config = pipelineConfig(work, { vmcatcherCacheFolders: [cache], allowedFileFolders: [cache] });
    expect(config.security.allowUnverifiedImages).toBe(false);
    activities = asRunByWorker(createHostActivities({ config, logger: quietLogger }));
    server.route('/image.img', { body: image });
  });

  afterAll(async () => {
    await server.close();
    await root.cleanup();
  });

  const queued = (fields: Partial<ImageEvent>) => event({ origin: 'message', ...fields });

  test('a download whose sha256 is right is kept, with both hashes from one read', async () => {
    const got = await activities.acquireImage({
      workflowId: 'sha256-ok',
      event: queued({ uri: server.at('/image.img'), checksumSha256: sha256(image) }),
    });
    expect(got).toMatchObject({ bytes: image.length, sha256: sha256(image), sha512: sha512(image) });
  });

  test.each([
    ['an HTTP download', () => ({ uri: server.at('/image.img') })],
    ['a file: URL', () => ({ uri: `file://${path.join(cache, 'cached-uuid')}` })],
    [
      'a vmcatcher cache copy',
      () => ({
        origin: 'vmcatcher' as const,
        type: 'AvailablePostfix' as const,
        cacheDir: cache,
        filename: 'cached-uuid',
      }),
    ],
  ])('%s whose sha256 is not the event’s is refused, non-retryable, naming both sums', async (_name, where) => {
    const failure = (await activities
      .acquireImage({
        workflowId: `sha256-bad-${_name.length}`,
        event: queued({ ...where(), checksumSha256: othersSha256 }),
      })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure).toMatchObject({ nonRetryable: true, type: 'ImageIntegrityError' });
    expect(failure.message).toContain(
      `sha256 mismatch: expected ${othersSha256} (VMCATCHER_EVENT_SL_CHECKSUM_SHA256), got ${sha256(image)}`,
    );
  });

  test('with both sums given, a right sha512 does not excuse a wrong sha256', async () => {
    await expect(
      activities.acquireImage({
        workflowId: 'both-one-wrong',
        event: queued({ uri: server.at('/image.img'), checksumSha512: sha512(image), checksumSha256: othersSha256 }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringContaining('sha256 mismatch') });
    await expect(
      activities.acquireImage({
        workflowId: 'both-other-wrong',
        event: queued({ uri: server.at('/image.img'), checksumSha512: 'ab'.repeat(64), checksumSha256: sha256(image) }),
      }),
    ).rejects.toMatchObject({ nonRetryable: true, message: expect.stringContaining('sha512 mismatch') });
  });

  test('a queued event with no checksum is refused before anything is fetched, naming security.allowUnverifiedImages', async () => {
    const before = server.ranges.length;
    const failure = (await activities
      .acquireImage({ workflowId: 'no-sum', event: queued({ uri: server.at('/image.img'), imageListId: 'list-a' }) })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure).toMatchObject({ nonRetryable: true, type: 'InvalidInputError' });
    expect(failure.message).toBe(
      'image img-1 of list-a: the event carries no checksum (VMCATCHER_EVENT_SL_CHECKSUM_SHA512 or VMCATCHER_EVENT_SL_CHECKSUM_SHA256); unverified images are refused unless security.allowUnverifiedImages = true',
    );
    expect(server.ranges.length).toBe(before);
  });

  test('the exceptions: a vmcatcher cache file (vmcatcher verified it) and the operator’s own command', async () => {
    const cached = await activities.acquireImage({
      workflowId: 'no-sum-cache',
      event: queued({ origin: 'vmcatcher', type: 'AvailablePostfix', cacheDir: cache, filename: 'cached-uuid' }),
    });
    expect(cached).toMatchObject({ source: 'vmcatcher-cache', bytes: image.length });
    const command = await activities.acquireImage({
      workflowId: 'no-sum-command',
      event: event({ origin: 'command', uri: server.at('/image.img') }),
    });
    expect(command).toMatchObject({ source: 'download', bytes: image.length });
  });
});
