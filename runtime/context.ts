import { Context } from '@temporalio/activity';

/**
 * The activity context when running inside a Temporal worker, undefined when an activity
 * function is called directly (the `transform` command, tests): heartbeats become no-ops
 * and nothing cancels.
 */
export function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

export function heartbeat(details?: unknown): void {
  activityContext()?.heartbeat(details);
}

export function cancellationSignal(): AbortSignal | undefined {
  return activityContext()?.cancellationSignal;
}

/** The details of the last heartbeat of a previous attempt, if this is a retry. */
export function previousHeartbeat<T>(): T | undefined {
  return activityContext()?.info.heartbeatDetails as T | undefined;
}
