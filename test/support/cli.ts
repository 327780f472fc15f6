import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Options } from 'execa';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/snf-vmcatcher.js');
/** The shared data folder (real image lists, interop artefacts): beside the checkout, or above a git worktree's folder. */
export const SHARED = findShared();

function findShared(): string {
  for (let dir = path.dirname(ROOT); ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'shared', 'imagelists'))) return path.join(dir, 'shared');
    if (path.dirname(dir) === dir) return path.resolve(ROOT, '../shared');
  }
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the real command line (the compiled CLI) as a user or vmcatcher would. */
export async function runCli(
  args: string[],
  opts: { env?: Record<string, string | undefined>; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<CliResult> {
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

/**
 * The same command line run from the TypeScript sources (through tsx), for the unit project:
 * `npm run test:unit` needs nothing built. What runs is cli/main.ts's `main`, as
 * bin/snf-vmcatcher.js runs the compiled one.
 */
export async function runCliFromSource(args: string[], opts: { timeoutMs?: number } = {}): Promise<CliResult> {
  const entry = `import { main } from ${JSON.stringify(path.join(ROOT, 'cli/main.ts'))}; process.exitCode = await main(process.argv.slice(1));`;
  const result = await execa('node', ['--import', 'tsx', '--input-type=module', '-e', entry, ...args], {
    reject: false,
    cwd: ROOT,
    timeout: opts.timeoutMs ?? 60_000,
  });
  return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}
