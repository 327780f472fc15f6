import { mkdir, mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { parseConfig } from '../../core/config.js';
import { OWNER_FILE, workDirFor } from '../../activities/workspace.js';
import { auditSlots, sweepWorkFolders } from '../../worker/housekeeping.js';
import { HostSlots } from '../../worker/host-slots.js';
import { quietLogger } from '../support/pipeline-fixtures.js';
import { uniqueTaskQueue } from '../support/service-process.js';

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/** Work folders of closed workflows are swept; slots of closed workflows are given back. */
describe('worker housekeeping against the real Temporal server', () => {
  let connection: Connection;
  let client: Client;
  let dir: string;
  const taskQueue = uniqueTaskQueue('housekeeping');
  let runningId: string;

  beforeAll(async () => {
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-sweep-'));
    // No worker polls this queue: the workflow stays running.
    runningId = `sweep-running-${taskQueue}`;
    await client.workflow.start('registerImage', { taskQueue, workflowId: runningId, args: [] });
  });

  afterAll(async () => {
    await client.workflow
      .getHandle(runningId)
      .terminate('test cleanup')
      .catch(() => undefined);
    await connection.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('removes the folders of closed workflows and old ones of unknown workflows; keeps running ones, recent unknown ones and a live transform', async () => {
    const config = parseConfig({ worker: { workingFolder: dir, sweepIntervalMs: 60_000 } }, 'test');
    const folder = async (workflowId: string | undefined, name?: string) => {
      const d = workflowId ? workDirFor(config, workflowId) : path.join(dir, name!);
      await mkdir(d, { recursive: true });
      if (workflowId) await writeFile(path.join(d, OWNER_FILE), JSON.stringify({ workflowId }));
      await writeFile(path.join(d, 'image.qcow2'), 'x');
      return d;
    };
    const closedId = `closed-${taskQueue}`;
    await client.workflow.start('registerImage', { taskQueue, workflowId: closedId, args: [] });
    await client.workflow.getHandle(closedId).terminate('closed for the test');
    const closed = await folder(closedId);
    const gone = await folder(`never-existed-${taskQueue}`);
    const recentUnknown = await folder(`recent-unknown-${taskQueue}`);
    const liveTransform = await folder(`transform-abc-${process.pid}`);
    const running = await folder(runningId);
    const recentLegacy = await folder(undefined, 'legacy-recent');
    const oldLegacy = await folder(undefined, 'legacy-old');
    const old = new Date(Date.now() - 2 * 60_000);
    for (const d of [gone, oldLegacy, liveTransform]) await utimes(d, old, old);

    const removed = await sweepWorkFolders(client, config, quietLogger);
    expect(removed.sort()).toEqual([closed, gone, oldLegacy].sort());
    for (const kept of [running, recentLegacy, recentUnknown, liveTransform])
      expect([kept, await exists(kept)]).toEqual([kept, true]);
  });

  test('a slot held by a workflow that closed without giving it back is released; a running holder keeps its slot', async () => {
    const slots = new HostSlots(2);
    await slots.acquire(runningId);
    await slots.acquire(`terminated-${taskQueue}`);
    const waiting = slots.acquire('next');
    const freed = await auditSlots(client, slots, quietLogger);
    expect(freed).toEqual([`terminated-${taskQueue}`]);
    await waiting;
    expect(slots.state().holders.sort()).toEqual([runningId, 'next'].sort());
  });
});
