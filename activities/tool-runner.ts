import { execa } from 'execa';
import type { Logger } from '../core/logging.js';
import { scrubSecrets } from '../core/logging.js';
import { ToolError } from '../core/errors.js';
import { activityContext } from './context.js';

export interface ToolRun {
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
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

const STDERR_TAIL_LINES = 5;
const DEFAULT_HEARTBEAT_MS = 10_000;

/**
 * Runs an external program: argument array, timeout, killed (SIGTERM, then SIGKILL) when the
 * activity is cancelled; every output line logged, scrubbed of secrets; heartbeats while it
 * runs so a hung host is noticed. A non-zero exit is a ToolError carrying the last stderr
 * lines; a kill by signal or a timeout is transient.
 */
export async function runTool(run: ToolRun): Promise<ToolResult> {
  const ctx = activityContext();
  const started = Date.now();
  const display = scrubSecrets([run.command, ...run.args].join(' '));
  const log = run.logger.child({ tool: run.tool });
  log.info({ command: display }, `running ${run.tool}`);

  const beat = () => ctx?.heartbeat({ tool: run.tool, elapsedMs: Date.now() - started });
  const heartbeatMs = ctx?.info.heartbeatTimeoutMs ? Math.max(1000, Math.floor(ctx.info.heartbeatTimeoutMs / 3)) : DEFAULT_HEARTBEAT_MS;
  const timer = ctx ? setInterval(beat, heartbeatMs) : undefined;

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
    const result = await execa(run.command, run.args, {
      reject: false,
      timeout: run.timeoutMs,
      cancelSignal: run.cancelSignal ?? ctx?.cancellationSignal,
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
        throw new ToolError(`${run.tool} timed out after ${run.timeoutMs} ms${tail ? `: ${tail}` : ''}`, { permanent: false });
      }
      if (result.signal) {
        throw new ToolError(`${run.tool} was killed by ${result.signal}${tail ? `: ${tail}` : ''}`, { permanent: false });
      }
      if (result.exitCode === undefined) {
        throw new ToolError(`${run.tool} could not be run (${run.command}): ${scrubSecrets(result.shortMessage ?? '')}`, {
          permanent: (result.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT',
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
    if (timer) clearInterval(timer);
  }
}
