import { SnfVmcatcherError } from '../../core/errors.js';

/**
 * Keystone or Glance refused or failed a call. `status` is the HTTP status when there was one;
 * `permanent` says whether the same call can succeed later (a 5xx, 408, 429 or a network
 * failure can; a refused credential, a forbidden action or a bad request cannot).
 */
export class CloudApiError extends SnfVmcatcherError {
  readonly status?: number;
  constructor(message: string, opts: { status?: number; permanent?: boolean; cause?: unknown } = {}) {
    const status = opts.status;
    const permanent =
      opts.permanent ?? (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429);
    super(message, { permanent, cause: opts.cause });
    this.status = status;
  }
}
