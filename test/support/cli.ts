import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Options } from 'execa';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/snf-vmcatcher.js');
export const SHARED = path.resolve(ROOT, '../shared');

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the real command line (the compiled CLI) as a user or vmcatcher would. */
export async function runCli(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; timeoutMs?: number; input?: string } = {}): Promise<CliResult> {
  const options: Options = {
    reject: false,
    cwd: opts.cwd ?? ROOT,
    env: { SNF_VMCATCHER_LOG_LEVEL: 'debug', ...opts.env },
    extendEnv: true,
    timeout: opts.timeoutMs ?? 60_000,
    input: opts.input,
  };
  const result = await execa('node', [BIN, ...args], options);
  return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}
