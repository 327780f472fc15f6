import { randomBytes } from 'node:crypto';
import { execa, type ResultPromise } from 'execa';
import { BIN, ROOT } from './cli.js';

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
  opts: { env?: Record<string, string | undefined>; readyPattern?: RegExp; timeoutMs?: number } = {},
): Promise<ServiceProcess> {
  let output = '';
  const proc = execa('node', [BIN, ...args], {
    cwd: ROOT,
    env: { SNF_VMCATCHER_LOG_LEVEL: 'debug', ...opts.env },
    extendEnv: true,
    reject: false,
    buffer: false,
  });
  proc.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  proc.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const ready = opts.readyPattern ?? /worker started|consuming/;
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let exited = false;
  void proc.then(() => (exited = true));
  while (!ready.test(output)) {
    if (exited) throw new Error(`service exited before it was ready:\n${output}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`service not ready in time:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    proc,
    log: () => output,
    async stop() {
      if (!exited) proc.kill('SIGTERM');
      await proc;
    },
    async kill() {
      if (!exited) proc.kill('SIGKILL');
      await proc;
    },
  };
}
