import { activityContext } from './context.js';

/** What a long step reports in its heartbeats: the Web UI shows it on the pending activity. */
export interface StepProgress {
  /** What is happening, for a person: "download", "qemu-img convert", "copy from cache". */
  step: string;
  bytesDone?: number;
  bytesTotal?: number;
  /** Anything a resume needs (e.g. the download offset); kept small. */
  [key: string]: unknown;
}

const DEFAULT_INTERVAL_MS = 10_000;

/**
 * How often a step heartbeats: a fraction of the activity's heartbeat timeout, so a busy
 * event loop or a slow disk never lets the timeout pass between two beats.
 */
function heartbeatInterval(): number {
  const timeout = activityContext()?.info.heartbeatTimeoutMs;
  return timeout ? Math.max(100, Math.floor(timeout / 4)) : DEFAULT_INTERVAL_MS;
}

/** Activities already heartbeating from a timer: an inner loop (runTool inside a step) leaves it be. */
const beating = new WeakSet<object>();

/**
 * Heartbeats from a timer while a long piece of work runs (a child process, a stream), with
 * the details `progress()` returns at each beat. Outside an activity it does nothing, and so it
 * does inside work that already heartbeats (the outer caller knows the step best, and two timers
 * would make the Web UI show whichever beat came last). Returns a function that stops it.
 */
export function keepHeartbeating(progress: () => StepProgress): () => void {
  const ctx = activityContext();
  if (!ctx || beating.has(ctx)) return () => undefined;
  beating.add(ctx);
  const beat = () => ctx.heartbeat(progress());
  beat();
  const timer = setInterval(beat, heartbeatInterval());
  return () => {
    clearInterval(timer);
    beating.delete(ctx);
  };
}

/** Runs `work` while heartbeating with `progress` (fixed details, or a function giving the latest). */
export async function whileHeartbeating<T>(
  progress: StepProgress | (() => StepProgress),
  work: () => Promise<T>,
): Promise<T> {
  const stop = keepHeartbeating(typeof progress === 'function' ? progress : () => progress);
  try {
    return await work();
  } finally {
    stop();
  }
}
