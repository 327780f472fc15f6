import { randomBytes } from 'node:crypto';
import type { ResultPromise } from 'execa';
import { spawnCli } from './bridge.js';

export interface ServiceProcess {
  proc: ResultPromise;
  /** Everything the process wrote to stderr so far (its log). */
  log(): string;
  /** SIGTERM, then wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL: the process dies without any chance to clean up. */
  kill(): Promise<void>;
}

/** A task queue no other test uses, so workers of different tests never steal each other's tasks. */
export function uniqueTaskQueue(prefix = 'test'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/**
 * Starts a long-running CLI command (`worker`, `run`, `dequeue --server`) as a child process and
 * resolves once `readyPattern` appears in its log.
 */
export async function startService(
  args: string[],
  opts: { env?: Record<string, string>; readyPattern?: RegExp; timeoutMs?: number } = {},
): Promise<ServiceProcess> {
  const child = spawnCli(args, opts.env ?? {});
  try {
    await child.waitForLog(opts.readyPattern ?? /worker started|consuming/, opts.timeoutMs ?? 60_000);
  } catch (err) {
    child.process.kill('SIGKILL');
    throw err;
  }
  return {
    proc: child.process,
    log: child.stderr,
    async stop() {
      await child.stop();
    },
    async kill() {
      if (child.process.exitCode === null) child.process.kill('SIGKILL');
      await child.process;
    },
  };
}
