import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { chmod, mkdir, mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { execa } from 'execa';
import { ROOT, runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { makeTar, ovfFor } from '../support/pipeline-fixtures.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { registrationOf } from '../support/workflows.js';

const MiB = 1024 ** 2;
const SIZE = 256 * MiB;
/**
 * The worker's qemu-img converts at most this fast (`qemu-img convert -r`, a wrapper first on its
 * PATH), as on a slow disk: every conversion of SIZE takes at least SIZE / RATE = 8 s however fast
 * this machine's page cache is (an unthrottled 1 GiB conversion took 1.6 s on a quiet machine, too
 * close to a few heartbeat timeouts to prove anything).
 */
const RATE = 32 * MiB;
const HEARTBEAT_TIMEOUT_MS = 600;

/**
 * The local steps: unpacking an OVA and `qemu-img convert` of an image each take several times
 * the heartbeat timeout (qemu-img's rate held down by a wrapper), and still finish on their first attempt because they
 * heartbeat while they work; a worker killed mid-convert takes its qemu-img with it, and
 * nothing of the killed attempt writes into the work folder the retry uses.
 */
describe('long local steps', () => {
  let dir: string;
  let server: TestServer;
  let connection: Connection;
  let client: Client;
  const workers: ServiceProcess[] = [];
  /** The workers' PATH: a rate-limited qemu-img wrapper first. */
  let slowPath: string;

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'long-steps-'));
    const at = (f: string) => path.join(dir, f);
    // Random data behind an MBR: nothing compresses it, so every step moves all of it.
    await execa('dd', ['if=/dev/urandom', `of=${at('disk.raw')}`, 'bs=1M', `count=${SIZE / MiB}`, 'status=none']);
    await writeLinuxMbr(at('disk.raw'), SIZE);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', at('disk.raw'), at('disk.qcow2')]);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', at('disk.raw'), at('disk.vmdk')]);
    await writeFile(at('appliance.ovf'), ovfFor([{ href: 'disk.vmdk', address: 0 }]));
    await makeTar(at('appliance.ova'), dir, ['appliance.ovf', 'disk.vmdk']);
    await rm(at('disk.raw'));
    await rm(at('disk.vmdk'));
    // `qemu-img convert …` runs as `qemu-img convert -r RATE …`; every other qemu-img call is unchanged.
    const { stdout: realQemuImg } = await execa('sh', ['-c', 'command -v qemu-img']);
    const bin = at('bin');
    await mkdir(bin);
    await writeFile(
      path.join(bin, 'qemu-img'),
      `#!/bin/sh\nif [ "$1" = convert ]; then shift; exec ${realQemuImg} convert -r ${RATE} "$@"; fi\nexec ${realQemuImg} "$@"\n`,
    );
    await chmod(path.join(bin, 'qemu-img'), 0o755);
    slowPath = `${bin}:${process.env.PATH}`;
    server = await startTestServer({
      routes: {
        '/images/disk.qcow2': { file: at('disk.qcow2') },
        '/images/appliance.ova': { file: at('appliance.ova') },
        // Another URL, so the crash test's registration is a new workflow, not the finished one.
        '/crash/disk.qcow2': { file: at('disk.qcow2') },
      },
    });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
  }, 300_000);

  afterAll(async () => {
    for (const w of workers) await w.kill();
    await server?.close();
    await connection?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function setUp(name: string, heartbeatTimeoutMs: number) {
    const home = path.join(dir, name);
    await mkdir(home, { recursive: true });
    const cloud = await fakeCloud(home);
    const conf = path.join(home, 'application.conf');
    await writeFile(
      conf,
      `worker {
  workingFolder = "${home}/work"
  heartbeatTimeoutMs = ${heartbeatTimeoutMs}
  retryInitialIntervalMs = 500
  retryMaximumIntervalMs = 2000
}
${cloud.synnefoConf('prepare = false')}`,
    );
    const env = { TEMPORAL_TASK_QUEUE: uniqueTaskQueue(name), ...cloud.env, PATH: slowPath };
    return { home, cloud, conf, env, work: path.join(home, 'work') };
  }

  test('an OVA and a qcow2, each taking several heartbeat timeouts to unpack and convert, convert on their first attempt', async () => {
    const { cloud, conf, env } = await setUp('heartbeats', HEARTBEAT_TIMEOUT_MS);
    workers.push(await startService(['worker', '--conf', conf], { env }));
    for (const image of ['appliance.ova', 'disk.qcow2']) {
      const result = await runCli(
        ['register-now', '--conf', conf, '--url', server.at(`/images/${image}`), '--kamaki-cloud', 'e2e'],
        { env, timeoutMs: 600_000 },
      );
      expect(result.stderr).not.toMatch(/Registration failed/);
      expect(result.exitCode).toBe(0);
      const workflowId = /the registration is (\S+)/.exec(result.stderr)?.[1];
      expect(workflowId).toBeDefined();
      const runs = await activityRuns(client.workflow.getHandle(workflowId!), 'convertToRaw');
      expect(runs).toHaveLength(1);
      expect(runs[0]).toMatchObject({ attempt: 1, completed: true, timedOut: false });
      // Honest only if the step really outlived the heartbeat timeout several times over.
      expect(runs[0].ms).toBeGreaterThan(3 * HEARTBEAT_TIMEOUT_MS);
      console.log(
        `${image}: convertToRaw took ${runs[0].ms} ms on attempt ${runs[0].attempt} (heartbeat timeout ${HEARTBEAT_TIMEOUT_MS} ms)`,
      );
    }
    expect(await cloud.images()).toHaveLength(2);
  }, 900_000);

  test('a worker killed (SIGKILL) mid-convert leaves no qemu-img running and nothing writing; the retry on a new worker completes', async () => {
    const { cloud, conf, env, work } = await setUp('kill', 3000);
    workers.push(await startService(['worker', '--conf', conf], { env }));
    const started = await runCli(
      ['register-now', '--conf', conf, '--url', server.at('/crash/disk.qcow2'), '--kamaki-cloud', 'e2e', '--no-wait'],
      { env },
    );
    expect(started.exitCode).toBe(0);
    const handle = await registrationOf(client, started.stdout.trim());

    // qemu-img convert is running and has reported progress.
    let seen: unknown;
    const progress = await waitFor(async () => {
      const pending = (await handle.describe()).raw.pendingActivities?.[0];
      seen = {
        activity: pending?.activityType?.name,
        attempt: pending?.attempt,
        lastFailure: pending?.lastFailure?.message,
      };
      if (pending?.activityType?.name !== 'convertToRaw') return undefined;
      const payload = pending.heartbeatDetails?.payloads?.[0];
      const details = payload
        ? defaultPayloadConverter.fromPayload<{ step?: string; bytesDone?: number }>(payload as never)
        : undefined;
      seen = { ...(seen as object), details };
      return details?.step?.startsWith('qemu-img convert') && (details.bytesDone ?? 0) > 0 ? details : undefined;
    }, 180_000).catch((err: Error) => {
      throw new Error(
        `${err.message}; last seen ${JSON.stringify(seen)}; worker log: ${workers.at(-1)?.log().slice(-3000)}`,
      );
    });
    expect(progress.step).toMatch(/^qemu-img convert disk\.qcow2/);
    const before = await qemuImgProcesses(work);
    expect(before.length).toBeGreaterThanOrEqual(1);

    await workers[workers.length - 1].kill();
    // The kernel kills qemu-img with its parent (setpriv --pdeathsig SIGKILL).
    await waitFor(async () => ((await qemuImgProcesses(work)).length === 0 ? true : undefined), 1500);

    // Nothing of the old attempt still writes into the work folder.
    const snapshot1 = await folderSnapshot(work);
    await new Promise((r) => setTimeout(r, 2000));
    expect(await folderSnapshot(work)).toEqual(snapshot1);

    workers.push(await startService(['worker', '--conf', conf], { env }));
    expect(await handle.result()).toMatchObject({ handler: 'registerImage', reused: false });
    const runs = await activityRuns(handle, 'convertToRaw');
    expect(runs.at(-1)).toMatchObject({ completed: true });
    expect(runs.at(-1)!.attempt).toBeGreaterThanOrEqual(2);
    expect(await qemuImgProcesses(work)).toEqual([]);
    expect(await cloud.images()).toHaveLength(1);
  }, 900_000);
});

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Live (not zombie) qemu-img processes whose command line names a path under `folder`. */
async function qemuImgProcesses(folder: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      const state = /\)\s+(\S)/.exec(await readFile(`/proc/${entry}/stat`, 'utf8'))?.[1];
      if (state === 'Z') continue;
      if (cmdline.some((a) => path.basename(a) === 'qemu-img') && cmdline.some((a) => a.includes(folder)))
        pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/** Every file under `folder` with its size and modification time. */
async function folderSnapshot(folder: string): Promise<Record<string, { size: number; mtimeMs: number }>> {
  const out: Record<string, { size: number; mtimeMs: number }> = {};
  for (const entry of await readdir(folder, { recursive: true })) {
    const s = await stat(path.join(folder, entry));
    if (s.isFile()) out[entry] = { size: s.size, mtimeMs: s.mtimeMs };
  }
  return out;
}

interface ActivityRun {
  attempt?: number;
  /** Why the attempt before the last one failed, if there was one. */
  lastFailure?: string;
  completed: boolean;
  timedOut: boolean;
  ms: number;
}

/** Each scheduled run of an activity in the workflow's history: its last attempt, outcome and duration. */
async function activityRuns(handle: WorkflowHandle, type: string): Promise<ActivityRun[]> {
  const events = (await handle.fetchHistory()).events ?? [];
  const time = (e: (typeof events)[number] | undefined) =>
    e?.eventTime ? Number(e.eventTime.seconds) * 1000 + (e.eventTime.nanos ?? 0) / 1e6 : NaN;
  const forRun = (
    id: number,
    key:
      | 'activityTaskStartedEventAttributes'
      | 'activityTaskCompletedEventAttributes'
      | 'activityTaskTimedOutEventAttributes',
  ) => events.find((e) => Number(e[key]?.scheduledEventId ?? -1) === id);
  return events
    .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type)
    .map((s) => {
      const id = Number(s.eventId);
      const startedEvent = forRun(id, 'activityTaskStartedEventAttributes');
      const completedEvent = forRun(id, 'activityTaskCompletedEventAttributes');
      return {
        attempt: startedEvent?.activityTaskStartedEventAttributes?.attempt ?? undefined,
        lastFailure: startedEvent?.activityTaskStartedEventAttributes?.lastFailure?.message ?? undefined,
        completed: completedEvent !== undefined,
        timedOut: forRun(id, 'activityTaskTimedOutEventAttributes') !== undefined,
        ms: Math.round(time(completedEvent) - time(startedEvent)),
      };
    });
}
