/** Processes the system benchmarks start: a Temporal dev server, snf-vmcatcher services. */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { ResultPromise } from 'execa';
import { freePort } from '../test/support/bridge.js';
import { startService } from '../test/support/service-process.js';
import { startDevServer, stopDevServer, TEMPORAL_CLI, waitForDevServer } from '../test/support/temporal-server.js';
import { log } from './lib.js';

export { freePort, TEMPORAL_CLI };

export interface Proc {
  proc: ResultPromise;
  output(): string;
  stop(): Promise<void>;
}

/** The project's Temporal dev server with our search attributes, persisting to a SQLite file in `dir`. */
export async function startTemporal(dir: string): Promise<Proc & { address: string }> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const proc = startDevServer(port, path.join(dir, 'temporal.db'));
  await waitForDevServer(address);
  log(`Temporal dev server at ${address}`);
  return { address, proc, output: () => '', stop: () => stopDevServer(proc) };
}

/** A long-running snf-vmcatcher command, ready once `ready` appears in its log. */
export async function startSnf(args: string[], env: Record<string, string>, ready: RegExp): Promise<Proc> {
  const service = await startService(args, {
    env: { SNF_VMCATCHER_LOG_LEVEL: 'info', ...env },
    readyPattern: ready,
    timeoutMs: 120_000,
  });
  return { proc: service.proc, output: service.log, stop: service.stop };
}
