import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { slowImageDownload, waitForDownloadOffset } from '../support/throttled-file-server.js';
import { registrationOf } from '../support/workflows.js';

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;

/**
 * A worker killed with SIGKILL in the middle of downloading a 512 MiB image. Once a new
 * worker runs, the workflow completes, and the bytes fetched after the restart are fewer than the
 * image's size (the download resumed from its last heartbeat with an HTTP Range request).
 */
describe('a worker killed mid-download', () => {
  let download: Awaited<ReturnType<typeof slowImageDownload>>;
  const workers: ServiceProcess[] = [];
  let connection: Connection;

  beforeAll(async () => {
    // 64 MiB/s: about 8 s for the whole image, long enough to kill the worker in the middle.
    download = await slowImageDownload('e2e-crash', SIZE, 64 * MiB);
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  });

  afterAll(async () => {
    for (const w of workers) await w.kill();
    await download?.close();
    await connection?.close();
  });

  test('the workflow completes after a new worker starts, fetching fewer bytes than the image size after the restart', async () => {
    const { dir, sha512, server } = download;
    const cloud = await fakeCloud(dir);
    const conf = path.join(dir, 'application.conf');
    await writeFile(
      conf,
      `worker {
  workingFolder = "${dir}/work"
  heartbeatTimeoutMs = 4000
  retryInitialIntervalMs = 500
  retryMaximumIntervalMs = 2000
}
${cloud.synnefoConf('prepare = false')}`,
    );
    const env = { TEMPORAL_TASK_QUEUE: uniqueTaskQueue('crash'), ...cloud.env };
    workers.push(await startService(['worker', '--conf', conf], { env }));

    const started = await runCli(
      [
        'register-now',
        '--conf',
        conf,
        '--url',
        server.url,
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
    const workflowId = started.stdout.trim();
    const client = new Client({ connection });
    const handle = await registrationOf(client, workflowId);

    // Wait until the download is well under way, as its heartbeats report it.
    const offset = await waitForDownloadOffset(handle, 128 * MiB);
    expect(offset).toBeGreaterThanOrEqual(128 * MiB);
    expect(offset).toBeLessThan(SIZE);
    await workers[0].kill();
    const requestsBeforeRestart = server.served.length;

    workers.push(await startService(['worker', '--conf', conf], { env }));
    const result = await handle.result();
    expect(result).toMatchObject({ handler: 'registerImage', reused: false });

    const afterRestart = server.served.slice(requestsBeforeRestart);
    const bytesAfterRestart = afterRestart.reduce((sum, r) => sum + r.bytesSent, 0);
    expect(afterRestart.length).toBeGreaterThanOrEqual(1);
    expect(afterRestart[0].status).toBe(206);
    expect(bytesAfterRestart).toBeLessThan(SIZE);
    expect(bytesAfterRestart).toBeGreaterThan(0);

    expect(await cloud.images()).toHaveLength(1);
    console.log(
      `resumed download: ${(bytesAfterRestart / MiB).toFixed(0)} MiB fetched after the restart, of ${SIZE / MiB} MiB`,
    );
  }, 240_000);
});
