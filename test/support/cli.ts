import { existsSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
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
 * The same command line parsed and run by cli/main.ts's `main` from the TypeScript sources, in
 * this process, for the unit project: `npm run test:unit` needs nothing built, and no process
 * starts. What it can run is what needs no server: `--help` of any command, usage errors.
 */
export async function runCliFromSource(args: string[]): Promise<CliResult> {
  const { main } = await import('../../cli/main.js');
  const collect = () => {
    const chunks: Buffer[] = [];
    const stream = new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        chunks.push(Buffer.from(chunk));
        done();
      },
    });
    return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
  };
  const [stdout, stderr] = [collect(), collect()];
  const exitCode = await main(args, {
    stdin: Readable.from([]),
    stdout: stdout.stream,
    stderr: stderr.stream,
    env: {},
  });
  return { exitCode, stdout: stdout.text(), stderr: stderr.text() };
}
