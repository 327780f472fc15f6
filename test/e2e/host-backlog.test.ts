import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { servedDisk, startThrottledFileServer } from '../support/throttled-file-server.js';
import { registrationOf } from '../support/workflows.js';

const MiB = 1024 * 1024;
const IMAGES = 6;
const SIZE = 4 * MiB;
/** Each download takes ≈ 4 s: longer than the host schedule-to-start timeout below. */
const RATE = 1 * MiB;
const HOST_SCHEDULE_TO_START_MS = 1500;

/**
 * A busy host is not a lost host. Six registrations queue on one worker with a single
 * file-step slot, each download outlasting the host schedule-to-start timeout. Every image waits
 * for the slot (visible as waiting-for-host), none moves host or starts over, each registers once.
 */
describe('a dozen images on one busy host (scaled down)', () => {
  let dir: string;
  let worker: ServiceProcess;
  let connection: Connection;
  const servers: Array<Awaited<ReturnType<typeof startThrottledFileServer>>> = [];

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-backlog-'));
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  });

  afterAll(async () => {
    await worker?.stop();
    for (const s of servers) await s.close();
    await connection?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('all register, each exactly once, without moving host or restarting; the waiting ones show as waiting', async () => {
    const cloud = await fakeCloud(dir);
    const taskQueue = uniqueTaskQueue('backlog');
    const conf = path.join(dir, 'application.conf');
    await writeFile(
      conf,
      `worker {
  workingFolder = "${dir}/work"
  maxConcurrentFileSteps = 1
  hostScheduleToStartTimeoutMs = ${HOST_SCHEDULE_TO_START_MS}
  heartbeatTimeoutMs = 1000
  retryInitialIntervalMs = 500
}
${cloud.synnefoConf('prepare = false')}`,
    );
    const env = { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env };
    worker = await startService(['worker', '--conf', conf], { env });

    const images: Array<{ sha512: string; url: string }> = [];
    for (let i = 0; i < IMAGES; i++) {
      const disk = await servedDisk(dir, `disk-${i}.raw`, SIZE / MiB, RATE);
      servers.push(disk.server);
      images.push(disk);
    }

    const starts = await Promise.all(
      images.map((image, i) =>
        runCli(
          [
            'register-now',
            '--conf',
            conf,
            '--url',
            image.url,
            '--image-identifier',
            `backlog-${i}`,
            '--kamaki-cloud',
            'e2e',
            '--format',
            'raw',
            '--sha512',
            image.sha512,
            '--no-wait',
          ],
          { env },
        ),
      ),
    );
    for (const started of starts) expect(started.exitCode).toBe(0);
    const revisionIds = starts.map((s) => s.stdout.trim());

    // While the host works through them, the others wait for its slot, and say so.
    const client = new Client({ connection });
    let mostWaiting = 0;
    const results = Promise.all(revisionIds.map((id) => client.workflow.getHandle(id).result()));
    let settled = false;
    void results.finally(() => (settled = true)).catch(() => undefined);
    while (!settled) {
      const listed = await runCli(
        ['registrations', '--conf', conf, '--stage', 'waiting-for-host', '--status', 'running', '--json'],
        { env },
      );
      expect(listed.exitCode).toBe(0);
      const waiting = listed.stdout.split('\n').filter((l) => l.includes('"backlog-'));
      mostWaiting = Math.max(mostWaiting, waiting.length);
      await new Promise((r) => setTimeout(r, 500));
    }
    const outcomes = (await results) as Array<{ action: string; register?: { reused?: boolean } }>;
    expect(outcomes.every((o) => o.action === 'register' && o.register?.reused === false)).toBe(true);
    expect(mostWaiting).toBeGreaterThanOrEqual(3);

    // Each image: one host claim, one download attempt, never moved nor restarted.
    for (const id of revisionIds) {
      const registration = await registrationOf(client, id);
      const events = (await registration.fetchHistory()).events ?? [];
      const scheduled = (name: string) =>
        events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === name);
      expect(scheduled('claimHost')).toHaveLength(1);
      expect(scheduled('acquireImage')).toHaveLength(1);
      const attempts = events
        .filter((e) => e.activityTaskStartedEventAttributes)
        .map((e) => e.activityTaskStartedEventAttributes!.attempt);
      expect(attempts.every((a) => a === 1)).toBe(true);
    }
    // Each image was fetched once, whole; each registered once.
    for (const server of servers) expect(server.served.map((r) => r.status)).toEqual([200]);
    const state = await cloud.state();
    expect(state.images).toHaveLength(IMAGES);
    expect(state.invocations.filter((i) => i.tool === 'kamaki' && i.argv.includes('upload'))).toHaveLength(IMAGES);
  }, 300_000);
});
