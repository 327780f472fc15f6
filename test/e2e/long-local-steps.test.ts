import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { execa } from 'execa';
import { parseConfig } from '../../core/config.js';
import { ImageEventSchema } from '../../core/event.js';
import { startWorkflowForEvent } from '../../core/starter.js';
import { registrationSite } from '../../clouds/index.js';
import { ROOT, runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { registrationOf } from '../support/workflows.js';

const GiB = 1024 ** 3;
/** Big enough that hashing it takes several heartbeat timeouts even on an idle machine (sha512 ≈ 0.5–0.8 GiB/s). */
const SIZE = 2 * GiB;
const HEARTBEAT_TIMEOUT_MS = 500;
const EventType = temporal.api.enums.v1.EventType;

/**
 * Steps that work on local files for much longer than the heartbeat timeout (hashing a
 * 2 GiB `file:` image in place, copying a 2 GiB image out of vmcatcher's cache) heartbeat from a
 * timer, so they succeed on their FIRST attempt with `worker.heartbeatTimeoutMs = 500`. Before,
 * they sent no heartbeat at all and every attempt died with "activity Heartbeat timeout".
 *
 * Only the acquire step is under test: once it has completed, the workflow is cancelled (the
 * later steps, on a 2 GiB image with a 500 ms heartbeat timeout, are other tests' business).
 */
describe('long local acquire steps under a short heartbeat timeout', () => {
  let dir: string;
  let worker: ServiceProcess;
  let connection: Connection;
  let client: Client;
  let conf: string;
  let env: Record<string, string>;
  let taskQueue: string;
  let sha512: string;
  let imageFile: string;
  let cacheDir: string;
  const cacheName = '5b1e3c7a-2f4d-4c47-9a61-0d8d2a3f6e11';

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-long-'));
    const images = path.join(dir, 'images');
    cacheDir = path.join(dir, 'cache');
    await mkdir(images);
    await mkdir(cacheDir);
    // Sparse: 2 GiB to hash and copy, almost nothing on disk until the copy is written.
    imageFile = path.join(images, 'big.raw');
    await execa('truncate', ['-s', String(SIZE), imageFile]);
    await writeLinuxMbr(imageFile, SIZE);
    await execa('cp', ['--sparse=always', imageFile, path.join(cacheDir, cacheName)]);
    sha512 = (await execa('sha512sum', [imageFile])).stdout.split(' ')[0];

    const cloud = await fakeCloud(dir);
    conf = path.join(dir, 'application.conf');
    await writeFile(
      conf,
      `worker {
  workingFolder = "${dir}/work"
  heartbeatTimeoutMs = ${HEARTBEAT_TIMEOUT_MS}
  diskReserveBytes = 0
  diskReservePercent = 0
  retryInitialIntervalMs = 500
  retryMaximumIntervalMs = 1000
  retryMaximumAttempts = 3
}
security {
  allowedFileFolders = ["${images}"]
  vmcatcherCacheFolders = ["${cacheDir}"]
}
${cloud.synnefoConf('prepare = false')}`,
    );
    taskQueue = uniqueTaskQueue('long');
    env = { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env };
    worker = await startService(['worker', '--conf', conf], { env });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
  });

  afterAll(async () => {
    await worker?.stop();
    await connection?.close();
    await rm(dir, { recursive: true, force: true });
  });

  interface AcquireOutcome {
    attempt: number;
    completed: boolean;
    durationMs: number;
    /** Heartbeat details seen on the pending activity while it ran (what the Web UI shows). */
    progress: Array<{ step?: string; bytesDone?: number; bytesTotal?: number }>;
  }

  /** Follows the workflow until acquireImage has ended, then cancels the workflow and waits for it to close. */
  const followAcquire = async (handle: WorkflowHandle): Promise<AcquireOutcome> => {
    const progress: AcquireOutcome['progress'] = [];
    const deadline = Date.now() + 180_000;
    let outcome: AcquireOutcome | undefined;
    while (!outcome && Date.now() < deadline) {
      const desc = await handle.describe();
      const pending = desc.raw.pendingActivities?.find((a) => a.activityType?.name === 'acquireImage');
      const payload = pending?.heartbeatDetails?.payloads?.[0];
      if (payload) progress.push(defaultPayloadConverter.fromPayload(payload as never));
      const events = (await handle.fetchHistory()).events ?? [];
      const scheduled = events.find(
        (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'acquireImage',
      );
      const ended = scheduled
        ? events.find((e) => {
            const a =
              e.activityTaskCompletedEventAttributes ??
              e.activityTaskFailedEventAttributes ??
              e.activityTaskTimedOutEventAttributes;
            return a && Number(a.scheduledEventId) === Number(scheduled.eventId);
          })
        : undefined;
      if (ended) {
        const started = events.find(
          (e) => Number(e.activityTaskStartedEventAttributes?.scheduledEventId ?? -1) === Number(scheduled!.eventId),
        )!;
        const ms = (e: typeof started) => Number(e.eventTime!.seconds) * 1000 + (e.eventTime!.nanos ?? 0) / 1e6;
        outcome = {
          attempt: started.activityTaskStartedEventAttributes!.attempt ?? 0,
          completed: ended.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
          durationMs: ms(ended) - ms(started),
          progress,
        };
      } else if (desc.status.name !== 'RUNNING') {
        throw new Error(`the workflow closed (${desc.status.name}) before acquireImage ended`);
      } else {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (!outcome) throw new Error('acquireImage did not end within 180 s');
    await handle.cancel();
    await handle.result().catch((err: unknown) => {
      if (!(err instanceof WorkflowFailedError)) throw err;
    });
    return outcome;
  };

  test('a 2 GiB file: image is hashed in place on the first attempt, reporting its progress', async () => {
    const started = await runCli(
      [
        'register-now',
        '--conf',
        conf,
        '--url',
        `file://${imageFile}`,
        '--kamaki-cloud',
        'e2e',
        '--format',
        'raw',
        '--sha512',
        sha512,
        '--size',
        String(SIZE),
        '--no-wait',
      ],
      { env },
    );
    expect(started.exitCode).toBe(0);
    const outcome = await followAcquire(await registrationOf(client, started.stdout.trim()));
    expect(outcome).toMatchObject({ attempt: 1, completed: true });
    // The premise: the step ran for several heartbeat timeouts.
    expect(outcome.durationMs).toBeGreaterThanOrEqual(3 * HEARTBEAT_TIMEOUT_MS);
    expect(outcome.progress.some((p) => p.step === 'checksum of the local file' && p.bytesTotal === SIZE)).toBe(true);
    console.log(`file: image hashed in ${Math.round(outcome.durationMs)} ms, attempt ${outcome.attempt}`);
  }, 240_000);

  test('a 2 GiB image is copied out of the vmcatcher cache on the first attempt, reporting its progress', async () => {
    const config = parseConfig({ temporal: { taskQueue } }, 'test');
    const event = ImageEventSchema.parse({
      origin: 'vmcatcher',
      type: 'AvailablePostfix',
      imageListId: 'long-steps-list',
      imageId: cacheName,
      cacheDir,
      filename: cacheName,
      size: SIZE,
      checksumSha512: sha512,
      format: 'raw',
    });
    const start = await startWorkflowForEvent(client, config, event, { kamakiCloud: 'e2e' }, registrationSite(config));
    expect(start.outcome).toBe('delivered');
    const outcome = await followAcquire(await registrationOf(client, start.workflowId!));
    expect(outcome).toMatchObject({ attempt: 1, completed: true });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(3 * HEARTBEAT_TIMEOUT_MS);
    expect(
      outcome.progress.some((p) => p.step?.startsWith('copy from the vmcatcher cache') && p.bytesTotal !== undefined),
    ).toBe(true);
    console.log(`vmcatcher cache copy in ${Math.round(outcome.durationMs)} ms, attempt ${outcome.attempt}`);
  }, 240_000);
});
