import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { Client, Connection } from '@temporalio/client';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { startThrottledFileServer } from '../support/throttled-file-server.js';
import { snapshot } from '../../cli/progress.js';

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;

/**
 * Issue #4: a worker killed with SIGKILL in the middle of downloading a 512 MiB image. Once a new
 * worker runs, the workflow completes, and the bytes fetched after the restart are fewer than the
 * image's size (the download resumed from its last heartbeat with an HTTP Range request).
 */
describe('a worker killed mid-download', () => {
  let dir: string;
  let server: Awaited<ReturnType<typeof startThrottledFileServer>>;
  const workers: ServiceProcess[] = [];
  let connection: Connection;

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-crash-'));
    const image = path.join(dir, 'big.raw');
    await execa('dd', ['if=/dev/urandom', `of=${image}`, 'bs=1M', `count=${SIZE / MiB}`, 'status=none']);
    // 64 MiB/s: about 8 s for the whole image, long enough to kill the worker in the middle.
    server = await startThrottledFileServer(image, 64 * MiB);
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  });

  afterAll(async () => {
    for (const w of workers) await w.kill();
    await server?.close();
    await connection?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the workflow completes after a new worker starts, fetching fewer bytes than the image size after the restart', async () => {
    const sha512 = (await execa('sha512sum', [path.join(dir, 'big.raw')])).stdout.split(' ')[0];
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
      ['register-now', '--conf', conf, '--url', server.url, '--kamaki-cloud', 'e2e', '--format', 'raw', '--sha512', sha512, '--size', String(SIZE), '--no-wait'],
      { env },
    );
    expect(started.exitCode).toBe(0);
    const workflowId = started.stdout.trim();
    const client = new Client({ connection });
    const handle = client.workflow.getHandle(workflowId);

    // Wait until the download is well under way, as its heartbeats report it.
    let offset = 0;
    for (let i = 0; i < 300 && offset < 128 * MiB; i++) {
      offset = (await snapshot(handle)).bytesDone ?? 0;
      await new Promise((r) => setTimeout(r, 100));
    }
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
    console.log(`resumed download: ${(bytesAfterRestart / MiB).toFixed(0)} MiB fetched after the restart, of ${SIZE / MiB} MiB`);
  }, 240_000);
});
