import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { removeIdleVerifiedFiles, VERIFIED_FOLDER } from '../activities/verified-files.js';
import { isWorkDirHeld, OWNER_FILE } from '../activities/workspace.js';
import type { HostSlots } from './host-slots.js';

type WorkflowState = 'running' | 'closed' | 'unknown';

/** Running, closed (completed, failed, cancelled, terminated, timed out), or unknown to the server. */
async function workflowState(client: Client, workflowId: string): Promise<WorkflowState> {
  try {
    const desc = await client.workflow.getHandle(workflowId).describe();
    return desc.status.name === 'RUNNING' ? 'running' : 'closed';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return 'unknown';
    throw err;
  }
}

async function workflowClosed(client: Client, workflowId: string): Promise<boolean> {
  return (await workflowState(client, workflowId)) !== 'running';
}

/** `transform` (a command, not a workflow) names its folder `transform-<time>-<pid>`: alive while its process is. */
function transformAlive(id: string): boolean {
  const pid = /^transform-[a-z0-9]+-(\d+)$/.exec(id)?.[1];
  if (!pid) return false;
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Removes work folders left behind by workflows that have closed: an attempt abandoned on a host
 * that was thought lost, a worker killed before the workflow's clean-up reached it. A folder held
 * by a running attempt here, or whose workflow still runs, stays. Folders without an owner file
 * (written by an older version), or whose workflow the server does not know, go once they are
 * older than a sweep interval.
 */
export async function sweepWorkFolders(client: Client, config: Config, logger: Logger): Promise<string[]> {
  const root = path.resolve(config.worker.workingFolder);
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  const removed: string[] = [];
  for (const entry of entries) {
    if (!entry.isDirectory() || entry.name === VERIFIED_FOLDER) continue;
    const dir = path.join(root, entry.name);
    if (isWorkDirHeld(dir)) continue;
    let closed: boolean;
    const old = async () => Date.now() - (await stat(dir)).mtimeMs > config.worker.sweepIntervalMs;
    try {
      const owner = JSON.parse(await readFile(path.join(dir, OWNER_FILE), 'utf8')) as { workflowId?: unknown };
      if (typeof owner.workflowId !== 'string') throw new Error('no workflowId');
      const state = await workflowState(client, owner.workflowId);
      // Unknown to the server: a workflow of another namespace or server, or a `transform` run;
      // only an old folder whose transform process is gone is taken for left over.
      closed = state === 'closed' || (state === 'unknown' && !transformAlive(owner.workflowId) && (await old()));
    } catch (err) {
      if (
        (err as NodeJS.ErrnoException).code === 'ENOENT' ||
        err instanceof SyntaxError ||
        (err as Error).message === 'no workflowId'
      ) {
        closed = await old();
      } else {
        logger.warn(
          { dir, error: (err as Error).message },
          'sweep: cannot tell whether the work folder is still used; keeping it',
        );
        continue;
      }
    }
    if (!closed || isWorkDirHeld(dir)) continue;
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    removed.push(dir);
  }
  if (removed.length) logger.info({ removed }, `sweep: removed ${removed.length} work folder(s) of closed workflows`);
  const idle = await removeIdleVerifiedFiles(config, config.worker.verifiedFileKeepMs);
  if (idle.length)
    logger.info({ removed: idle }, `sweep: removed ${idle.length} verified file(s) no registration needs any more`);
  return removed;
}

/** Gives back the slots of images whose workflow closed without releasing them (terminated, reset). */
export async function auditSlots(client: Client, slots: HostSlots, logger: Logger): Promise<string[]> {
  const freed: string[] = [];
  for (const workflowId of slots.state().holders) {
    try {
      if (await workflowClosed(client, workflowId)) {
        slots.release(workflowId);
        freed.push(workflowId);
      }
    } catch (err) {
      logger.warn(
        { workflowId, error: (err as Error).message },
        'slot audit: cannot describe the workflow holding a slot',
      );
    }
  }
  if (freed.length) logger.warn({ freed }, 'slot audit: released the slots of closed workflows');
  return freed;
}

/** Runs `task` now and then every `everyMs`, one run at a time, until stopped. Errors are logged. */
export function every(everyMs: number, task: () => Promise<unknown>, logger: Logger, what: string): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const run = async () => {
    try {
      await task();
    } catch (err) {
      logger.warn({ error: (err as Error).message }, `${what} failed`);
    }
    if (!stopped) {
      timer = setTimeout(run, everyMs);
      timer.unref();
    }
  };
  void run();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}
