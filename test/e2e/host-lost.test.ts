import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { slowImageDownload, waitForDownloadOffset } from '../support/throttled-file-server.js';
import { registrationOf } from '../support/workflows.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

/**
 * DESIGN §4.4: the file-bound steps run on one worker's own task queue, and the whole
 * sequence moves to another worker when that host dies. Host A is killed mid-download and
 * never comes back; host B (another host queue) finishes the registration from the start.
 */
describe('a host that dies for good', () => {
  let download: Awaited<ReturnType<typeof slowImageDownload>>;
  const workers: ServiceProcess[] = [];
  let connection: Connection;

  beforeAll(async () => {
    download = await slowImageDownload('e2e-host', SIZE, 8 * MiB);
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  });

  afterAll(async () => {
    for (const w of workers) await w.kill();
    await download?.close();
    await connection?.close();
  });

  test('the registration starts over on another host and completes there', async () => {
    const { dir, sha512, server } = download;
    const cloud = await fakeCloud(dir);
    const taskQueue = uniqueTaskQueue('host');
    const conf = async (host: string) => {
      const file = path.join(dir, `${host}.conf`);
      await writeFile(
        file,
        `worker {
  workingFolder = "${dir}/${host}-work"
  hostTaskQueue = "${taskQueue}-${host}"
  heartbeatTimeoutMs = 3000
  hostScheduleToStartTimeoutMs = 3000
  retryInitialIntervalMs = 500
}
${cloud.synnefoConf('prepare = false')}`,
      );
      return file;
    };
    const env = { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env };
    const hostA = await startService(['worker', '--conf', await conf('hostA')], { env });
    workers.push(hostA);

    const started = await runCli(
      [
        'register-now',
        '--conf',
        await conf('hostA'),
        '--url',
        server.url,
        '--kamaki-cloud',
        'e2e',
        '--format',
        'raw',
        '--sha512',
        sha512,
        '--no-wait',
      ],
      { env },
    );
    expect(started.exitCode).toBe(0);
    const handle = await registrationOf(new Client({ connection }), started.stdout.trim());

    const offset = await waitForDownloadOffset(handle, 8 * MiB);
    expect(offset).toBeGreaterThanOrEqual(8 * MiB);
    await hostA.kill();
    expect(hostA.log()).toContain(`${taskQueue}-hostA`);

    const hostB = await startService(['worker', '--conf', await conf('hostB')], { env });
    workers.push(hostB);
    const result = await handle.result();
    expect(result).toMatchObject({ handler: 'registerImage', reused: false });

    // Host B did the file-bound steps (its own queue), after host A's queue stopped answering.
    expect(hostB.log()).toMatch(/downloading the image/);
    const history = await handle.fetchHistory();
    const claims = history.events!.filter(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'claimHost',
    );
    expect(claims).toHaveLength(2);
    const hostQueues = history
      .events!.map((e) => e.activityTaskScheduledEventAttributes)
      .filter((a) => a?.activityType?.name === 'acquireImage')
      .map((a) => a!.taskQueue!.name);
    expect(hostQueues).toEqual([`${taskQueue}-hostA`, `${taskQueue}-hostB`]);
    expect(await cloud.images()).toHaveLength(1);
  }, 180_000);
});
