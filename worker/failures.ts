import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { OutOfSpaceError, SnfVmcatcherError } from '../core/errors.js';
import { scrubSecrets } from '../core/logging.js';
import { DISK_TOO_SMALL, OUT_OF_SPACE, type OutOfSpaceDetails } from '../core/workflow-contract.js';

/** Node system errors that retrying on the same host cannot fix. */
const PERMANENT_SYSTEM_CODES = new Set(['EACCES', 'EPERM', 'ENOENT', 'ENOTDIR', 'EISDIR', 'ELOOP', 'ENAMETOOLONG']);

/**
 * The one mapping from our errors to Temporal failures, for every activity: an error whose
 * `permanent` flag is set fails the activity at once (non-retryable); anything else is retried
 * with the workflow's backoff. The failure type is the error's class name, so a retry policy's
 * `nonRetryableErrorTypes` and the Web UI can name it; the message is scrubbed of secrets.
 */
export function toActivityFailure(err: unknown): Error {
  // Cancellation and failures already classified travel unchanged.
  if (err instanceof CancelledFailure || err instanceof ApplicationFailure) return err;
  if (err instanceof OutOfSpaceError) {
    // Never retried here: the workflow waits for space (canEverFit) or fails (it never will).
    const type = err.canEverFit ? OUT_OF_SPACE : DISK_TOO_SMALL;
    return ApplicationFailure.create({
      message: scrubSecrets(err.message),
      type,
      nonRetryable: true,
      details: [{ neededBytes: err.neededBytes, freeBytes: err.freeBytes } satisfies OutOfSpaceDetails],
    });
  }
  if (err instanceof SnfVmcatcherError) {
    const message = scrubSecrets(err.message);
    return err.permanent
      ? ApplicationFailure.nonRetryable(message, err.name)
      : ApplicationFailure.retryable(message, err.name);
  }
  const e = err instanceof Error ? err : new Error(String(err));
  const code = (e as NodeJS.ErrnoException).code;
  const message = scrubSecrets(e.message);
  if (code && PERMANENT_SYSTEM_CODES.has(code)) return ApplicationFailure.nonRetryable(message, code);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return ApplicationFailure.create({
      message: `out of disk space: ${message}`,
      type: OUT_OF_SPACE,
      nonRetryable: true,
      details: [{ neededBytes: 0, freeBytes: 0 }],
    });
  }
  // EIO, a killed process, a bug: worth another attempt (maybe on another host).
  return ApplicationFailure.retryable(message, code ?? e.name ?? 'Error');
}

/**
 * Classifies every error an activity throws, once, by `toActivityFailure`. The worker installs it
 * for all its activities (worker/worker.ts); so do tests that call activities as the worker would.
 * Outside a worker (the `transform` command) errors stay as they are, for the command's reporter.
 */
export const classifyFailures: ActivityInterceptorsFactory = () => ({
  inbound: {
    async execute(input, next) {
      try {
        return await next(input);
      } catch (err) {
        throw toActivityFailure(err);
      }
    },
  },
});
