import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { Logger } from '../core/logging.js';
import { scrubSecrets } from '../core/logging.js';
import { ToolError } from '../core/errors.js';
import { activityContext } from './context.js';
import { keepHeartbeating } from './heartbeats.js';

let setpriv: string | null | undefined;

/** util-linux setpriv, looked up once on PATH; null where there is none (not Linux). */
export function setprivPath(): string | null {
  if (setpriv === undefined) {
    setpriv = null;
    for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(path.delimiter)) {
      const candidate = path.join(dir || '.', 'setpriv');
      try {
        accessSync(candidate, constants.X_OK);
        setpriv = candidate;
        break;
      } catch {
        // not in this folder
      }
    }
  }
  return setpriv;
}

/**
 * The command line that runs `command` so that it dies with the worker: `setpriv --pdeathsig
 * SIGKILL --` asks the kernel to SIGKILL the child when its parent (this process) dies, even
 * by SIGKILL, so no qemu-img or xz outlives a crashed worker and writes into a folder another
 * attempt owns. Set-uid programs (sudo) drop the setting; what they start is on its own.
 */
export function guarded(command: string, args: readonly string[]): [string, string[]] {
  const program = setprivPath();
  return program ? [program, ['--pdeathsig', 'SIGKILL', '--', command, ...args]] : [command, [...args]];
}

/** setpriv's exit status when it could not run the program (util-linux EX_EXEC_ENOENT / EX_EXEC_FAILED). */
const EXEC_FAILED = new Set([126, 127]);

interface ToolRun {
  /** Short name for logs and errors ("kamaki", "snf-mkimage"). */
  tool: string;
  /** Program and arguments; never run through a shell. */
  command: string;
  args: string[];
  timeoutMs: number;
  logger: Logger;
  /** Exit codes that mean "this command line can never work" (usage errors): fail at once. */
  permanentExitCodes?: number[];
  env?: Record<string, string>;
  /** Overrides the activity's cancellation signal (tests, CLI use outside an activity). */
  cancelSignal?: AbortSignal;
  /** Also stops the program (e.g. the work folder lease of a replaced attempt). */
  signal?: AbortSignal;
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

const STDERR_TAIL_LINES = 5;

/**
 * Runs an external program: argument array, timeout, killed (SIGTERM, then SIGKILL) when the
 * activity is cancelled, and killed by the kernel when the worker dies (guarded); every output
 * line logged, scrubbed of secrets; heartbeats at a fraction of the heartbeat timeout while it
 * runs. A non-zero exit is a ToolError carrying the last stderr lines; a kill by signal or a
 * timeout is transient.
 */
export async function runTool(run: ToolRun): Promise<ToolResult> {
  const ctx = activityContext();
  const started = Date.now();
  const display = scrubSecrets([run.command, ...run.args].join(' '));
  const log = run.logger.child({ tool: run.tool });
  log.info({ command: display }, `running ${run.tool}`);

  const stopBeating = keepHeartbeating(() => ({ step: run.tool, elapsedMs: Date.now() - started }));
  const cancel = [run.cancelSignal ?? ctx?.cancellationSignal, run.signal].filter(
    (s): s is AbortSignal => s !== undefined,
  );

  const stderrTail: string[] = [];
  const logLines = (stream: 'stdout' | 'stderr') =>
    function* (line: unknown) {
      const text = scrubSecrets(String(line));
      if (stream === 'stderr') {
        stderrTail.push(text);
        if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
      }
      if (text.trim()) log.debug({ stream }, text);
      yield line;
    };

  try {
    const [command, args] = guarded(run.command, run.args);
    const result = await execa(command, args, {
      reject: false,
      timeout: run.timeoutMs,
      cancelSignal: cancel.length ? AbortSignal.any(cancel) : undefined,
      forceKillAfterDelay: 10_000,
      stdin: 'ignore',
      stdout: logLines('stdout'),
      stderr: logLines('stderr'),
      env: run.env,
      shell: false,
    });
    const elapsedMs = Date.now() - started;
    const tail = stderrTail.join(' | ');
    if (result.failed) {
      if (result.isCanceled) {
        log.warn({ elapsedMs }, `${run.tool} cancelled`);
        throw new ToolError(`${run.tool} was cancelled`, { permanent: false });
      }
      if (result.timedOut) {
        throw new ToolError(`${run.tool} timed out after ${run.timeoutMs} ms${tail ? `: ${tail}` : ''}`, {
          permanent: false,
        });
      }
      if (result.signal) {
        throw new ToolError(`${run.tool} was killed by ${result.signal}${tail ? `: ${tail}` : ''}`, {
          permanent: false,
        });
      }
      if (result.exitCode === undefined) {
        throw new ToolError(
          `${run.tool} could not be run (${run.command}): ${scrubSecrets(result.shortMessage ?? '')}`,
          {
            permanent: (result.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT',
          },
        );
      }
      if (
        command !== run.command &&
        EXEC_FAILED.has(result.exitCode) &&
        /^setpriv: failed to execute/m.test(String(result.stderr))
      ) {
        throw new ToolError(`${run.tool} could not be run (${run.command}): ${tail}`, {
          permanent: result.exitCode === 127,
        });
      }
      const permanent = run.permanentExitCodes?.includes(result.exitCode) ?? false;
      log.warn({ exitCode: result.exitCode, elapsedMs }, `${run.tool} failed`);
      throw new ToolError(`${run.tool} exited with code ${result.exitCode}${tail ? `: ${tail}` : ''}`, {
        permanent,
        exitCode: result.exitCode,
      });
    }
    log.info({ elapsedMs }, `${run.tool} done`);
    return { stdout: String(result.stdout), stderr: String(result.stderr) };
  } finally {
    stopBeating();
  }
}
