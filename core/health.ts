/**
 * What the `doctor` health check is made of, for every part that checks itself: the result of a
 * check, and what a check runs with. The cloud targets (clouds/index.ts chooses their checks)
 * and the subscription sources (subscriptions/sources.ts) check their own parts with these;
 * cli/commands/doctor.ts runs them in order and prints what they found.
 */
import type { Config } from './config.js';
import type { Logger } from './logging.js';

export interface CheckResult {
  check: string;
  /** `skip`: not needed with this configuration; never fails the run. */
  outcome: 'ok' | 'fail' | 'skip';
  detail: string;
  /** What the operator does about a failure. */
  fix?: string;
}

export const ok = (check: string, detail: string): CheckResult => ({ check, outcome: 'ok', detail });
export const skip = (check: string, detail: string): CheckResult => ({ check, outcome: 'skip', detail });
export const fail = (check: string, detail: string, fix: string): CheckResult => ({
  check,
  outcome: 'fail',
  detail,
  fix,
});

/** Each check gives up after this long, so a host that swallows packets cannot hang the health check. */
export const CHECK_TIMEOUT_MS = 20_000;

/** A failure's text, whatever was thrown. */
export function failureText(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}

export function withTimeout<T>(what: string, work: Promise<T>, ms = CHECK_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** What a part's checks run with. */
export interface HealthContext {
  config: Config;
  /** The checks' own tool runs log at debug; the health check's lines are its output. */
  log: Logger;
  /** Keeps a server's clock as an answer's Date header gave it, for the clock check at the end. */
  clock(from: string, header: string | string[] | undefined, sentAt: number): void;
}
