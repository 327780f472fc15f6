/** Processes the system benchmarks start: a Temporal dev server, snf-vmcatcher services. */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { SEARCH_ATTRIBUTES } from '../core/workflow-contract.js';
import { ROOT, log } from './lib.js';

export const TEMPORAL_CLI = process.env.SNF_VMCATCHER_TEMPORAL_CLI ?? path.join(ROOT, '.tools/bin/temporal');
const BIN = path.join(ROOT, 'bin/snf-vmcatcher.js');

import { freePort } from '../test/support/bridge.js';

export { freePort };

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
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--headless', '--db-filename', path.join(dir, 'temporal.db'), '--log-level', 'error'];
  for (const sa of SEARCH_ATTRIBUTES) args.push('--search-attribute', `${sa.name}=${sa.type}`);
  const proc = execa(TEMPORAL_CLI, args, { reject: false, buffer: false });
  let out = '';
  proc.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  for (let i = 0; i < 120; i++) {
    const health = await execa(TEMPORAL_CLI, ['operator', 'cluster', 'health', '--address', address], { reject: false });
    if (health.exitCode === 0) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  log(`Temporal dev server at ${address}`);
  return {
    address,
    proc,
    output: () => out,
    stop: async () => {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

/** A long-running snf-vmcatcher command, ready once `ready` appears in its log. */
export async function startSnf(args: string[], env: Record<string, string>, ready: RegExp): Promise<Proc> {
  let out = '';
  const proc = execa('node', [BIN, ...args], { cwd: ROOT, env: { SNF_VMCATCHER_LOG_LEVEL: 'info', ...env }, extendEnv: true, reject: false, buffer: false });
  proc.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  proc.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  let exited = false;
  void proc.then(() => (exited = true));
  const deadline = Date.now() + 120_000;
  while (!ready.test(out)) {
    if (exited || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`snf-vmcatcher ${args[0]} did not start:\n${out.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    output: () => out,
    stop: async () => {
      if (!exited) proc.kill('SIGTERM');
      await proc;
    },
  };
}
