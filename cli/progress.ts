import cliProgress from 'cli-progress';
import { defaultPayloadConverter } from '@temporalio/common';
import type { WorkflowHandle } from '@temporalio/client';
import { CURRENT_QUERY, SA_STAGE, type CurrentChild, type RevisionAction } from '../core/workflow-contract.js';

interface Snapshot {
  running: boolean;
  stage?: string;
  activity?: string;
  bytesDone?: number;
  bytesTotal?: number;
  attempt?: number;
  lastFailure?: string;
}

/** Reads a workflow's stage (search attribute) and its running step's heartbeat (bytes done of total). */
export async function snapshot(handle: WorkflowHandle): Promise<Snapshot> {
  const desc = await handle.describe();
  const pending = desc.raw.pendingActivities?.[0];
  let bytesDone: number | undefined;
  let bytesTotal: number | undefined;
  const payload = pending?.heartbeatDetails?.payloads?.[0];
  if (payload) {
    // Every long step reports bytesDone/bytesTotal (runtime/heartbeats.ts); older workers, offset/total.
    const details = defaultPayloadConverter.fromPayload<{
      bytesDone?: number;
      bytesTotal?: number;
      offset?: number;
      total?: number;
    }>(payload as never);
    bytesDone = details?.bytesDone ?? details?.offset;
    bytesTotal = details?.bytesTotal ?? details?.total;
  }
  return {
    running: desc.status.name === 'RUNNING',
    stage: desc.typedSearchAttributes.get(SA_STAGE),
    activity: pending?.activityType?.name ?? undefined,
    bytesDone,
    bytesTotal,
    attempt: pending?.attempt ?? undefined,
    lastFailure: pending?.lastFailure?.message ?? undefined,
  };
}

const MiB = 1024 * 1024;

/**
 * Follows a workflow until it closes: a progress bar on a terminal, plain lines otherwise
 * (one per stage change or failed attempt, and every 10% of a download).
 */
export async function followProgress(
  handle: WorkflowHandle,
  out: NodeJS.WritableStream,
  intervalMs = 1000,
): Promise<void> {
  const tty = Boolean((out as NodeJS.WriteStream).isTTY);
  const bar = tty
    ? new cliProgress.SingleBar(
        {
          format: '{stage} |{bar}| {percentage}% {done}/{total} MiB',
          hideCursor: true,
          stream: out as NodeJS.WriteStream,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let barStarted = false;
  let lastLine = '';
  let lastDecile = -1;
  for (;;) {
    let s: Snapshot;
    try {
      s = await snapshot(handle);
    } catch {
      s = { running: true };
    }
    const stage = s.stage ?? 'queued';
    if (bar && s.bytesTotal) {
      const payload = { stage, done: ((s.bytesDone ?? 0) / MiB).toFixed(0), total: (s.bytesTotal / MiB).toFixed(0) };
      if (!barStarted) bar.start(s.bytesTotal, s.bytesDone ?? 0, payload);
      else bar.update(s.bytesDone ?? 0, payload);
      barStarted = true;
    } else {
      let line = `stage: ${stage}${s.activity ? ` (${s.activity}${s.attempt && s.attempt > 1 ? `, attempt ${s.attempt}` : ''})` : ''}`;
      if (s.lastFailure && s.attempt && s.attempt > 1) line += ` — last failure: ${s.lastFailure}`;
      if (line !== lastLine) out.write(`${line}\n`);
      lastLine = line;
      if (s.bytesTotal) {
        const decile = Math.floor(((s.bytesDone ?? 0) / s.bytesTotal) * 10);
        if (decile !== lastDecile)
          out.write(`  ${((s.bytesDone ?? 0) / MiB).toFixed(0)} of ${(s.bytesTotal / MiB).toFixed(0)} MiB\n`);
        lastDecile = decile;
      }
    }
    if (!s.running) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  if (barStarted) bar?.stop();
}

/**
 * The child an image revision's workflow runs for `action` (registerImage for 'register'), once it
 * has started it; undefined when the revision's workflow closed without running one (a later
 * event superseded it).
 */
export async function waitForChild(
  parent: WorkflowHandle,
  action: RevisionAction,
  intervalMs = 300,
): Promise<WorkflowHandle | undefined> {
  for (;;) {
    const current = await parent.query<CurrentChild | undefined>(CURRENT_QUERY).catch(() => undefined);
    if (current?.action === action) return parent.client.getHandle(current.workflowId, current.runId);
    const { status } = await parent.describe();
    if (status.name !== 'RUNNING') {
      const last = await parent.query<CurrentChild | undefined>(CURRENT_QUERY).catch(() => undefined);
      return last?.action === action ? parent.client.getHandle(last.workflowId, last.runId) : undefined;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
