import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { filesystemSpace } from '../../activities/disk.js';
import { PROGRESS_QUERY, type ImageRevisionResult, type Progress } from '../../core/workflow-contract.js';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { servedDisk, startThrottledFileServer } from '../support/throttled-file-server.js';
import { registrationOf } from '../support/workflows.js';

const MiB = 1024 * 1024;
const FS_SIZE = 24 * MiB;
const isRoot = process.getuid?.() === 0;

/**
 * A working folder on a small filesystem (a 24 MiB tmpfs). An image that can never fit
 * fails at once naming the space it needs and what the filesystem holds, writing nothing; two
 * images that fit one at a time do not fill the disk together: the second waits (stage
 * waiting-for-disk, naming needed and free bytes) until the first has finished and cleaned up.
 * Mounting needs root, as on the CI machines.
 */
(isRoot ? describe : describe.skip)('a small working filesystem', () => {
  let dir: string;
  let work: string;
  let worker: ServiceProcess;
  let connection: Connection;
  let conf: string;
  let env: Record<string, string>;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  const servers: Array<Awaited<ReturnType<typeof startThrottledFileServer>>> = [];

  const image = async (name: string, mib: number, rate: number) => {
    const disk = await servedDisk(dir, name, mib, rate);
    servers.push(disk.server);
    return disk;
  };

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-small-disk-'));
    work = path.join(dir, 'work');
    await mkdir(work);
    await execa('mount', ['-t', 'tmpfs', '-o', `size=${FS_SIZE}`, 'tmpfs', work]);
    cloud = await fakeCloud(dir);
    conf = path.join(dir, 'application.conf');
    await writeFile(
      conf,
      `worker {
  workingFolder = "${work}"
  maxConcurrentFileSteps = 2
  diskReserveBytes = ${MiB}
  diskReservePercent = 0
  diskWaitIntervalMs = 500
  heartbeatTimeoutMs = 3000
  retryInitialIntervalMs = 300
}
${cloud.synnefoConf('prepare = false')}`,
    );
    env = { TEMPORAL_TASK_QUEUE: uniqueTaskQueue('small-disk'), ...cloud.env };
    worker = await startService(['worker', '--conf', conf], { env });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  });

  afterAll(async () => {
    await worker?.stop();
    for (const s of servers) await s.close();
    await connection?.close();
    await execa('umount', [work]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  test('an image larger than the filesystem fails at once, naming what it needs and what fits, writing nothing', async () => {
    const huge = await image('huge.raw', 40, 64 * MiB);
    const result = await runCli(
      [
        'register-now',
        '--conf',
        conf,
        '--url',
        huge.url,
        '--format',
        'raw',
        '--kamaki-cloud',
        'e2e',
        '--sha512',
        huge.sha512,
        '--size',
        String(huge.size),
      ],
      { env, timeoutMs: 120_000 },
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`Registration failed: .*${huge.size}.*never fit`));
    expect(huge.server.served).toEqual([]);
    expect((await cloud.images()).length).toBe(0);
  });

  test('two images that fit one at a time: the second waits for the disk, then both register; the disk never fills', async () => {
    const a = await image('a.raw', 14, 4 * MiB);
    const b = await image('b.raw', 14, 4 * MiB);
    const client = new Client({ connection });
    const start = async (img: typeof a, id: string) => {
      const started = await runCli(
        [
          'register-now',
          '--conf',
          conf,
          '--url',
          img.url,
          '--image-identifier',
          id,
          '--format',
          'raw',
          '--kamaki-cloud',
          'e2e',
          '--sha512',
          img.sha512,
          '--size',
          String(img.size),
          '--no-wait',
        ],
        { env },
      );
      expect(started.exitCode).toBe(0);
      return started.stdout.trim();
    };
    const [idA, idB] = await Promise.all([start(a, 'disk-a'), start(b, 'disk-b')]);

    let waitingMessage = '';
    let leastFree = Infinity;
    const done = Promise.all([idA, idB].map((id) => client.workflow.getHandle(id).result()));
    let settled = false;
    void done.finally(() => (settled = true)).catch(() => undefined);
    while (!settled) {
      leastFree = Math.min(leastFree, (await filesystemSpace(work)).free);
      for (const id of [idA, idB]) {
        const registration = await registrationOf(client, id).catch(() => undefined);
        const progress = await registration?.query<Progress>(PROGRESS_QUERY).catch(() => undefined);
        if (progress?.stage === 'waiting-for-disk') waitingMessage = progress.step ?? '';
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const results = (await done) as ImageRevisionResult[];
    expect(results.map((r) => r.register?.reused)).toEqual([false, false]);
    expect(waitingMessage).toMatch(new RegExp(`need ${14 * MiB} bytes, \\d+ free`));
    // The reserve was never touched: the second image did not start writing beside the first.
    expect(leastFree).toBeGreaterThanOrEqual(MiB);
    expect((await cloud.images()).length).toBe(2);
    // Each was fetched once, whole.
    expect(a.server.served.map((r) => r.status)).toEqual([200]);
    expect(b.server.served.map((r) => r.status)).toEqual([200]);
  });
});
