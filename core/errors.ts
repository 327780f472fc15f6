/**
 * One error type per failure a person can act on. The CLI maps them to exit codes once
 * (cli/base-command.ts); activities map them to retryable or non-retryable Temporal
 * failures once (worker/failures.ts).
 */
export class SnfVmcatcherError extends Error {
  /** True when retrying the same operation cannot succeed (bad input, 404, checksum mismatch). */
  readonly permanent: boolean;
  constructor(message: string, opts: { permanent?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.permanent = opts.permanent ?? false;
  }
}

/** The configuration file or an environment override is wrong. */
export class ConfigError extends SnfVmcatcherError {
  readonly key?: string;
  readonly file?: string;
  constructor(message: string, where: { key?: string; file?: string } = {}) {
    super(message, { permanent: true });
    this.key = where.key;
    this.file = where.file;
  }
}

/** An input (message, event, image list, option value) is not what it must be. */
export class InvalidInputError extends SnfVmcatcherError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { permanent: true, ...opts });
  }
}

/** The Temporal server cannot be reached or refused us. Transient by nature. */
export class TemporalUnavailableError extends SnfVmcatcherError {}

/** The broker cannot be reached or refused us. Transient by nature. */
export class BrokerError extends SnfVmcatcherError {}

/** A network fetch failed: HTTP status, TLS, timeout, too large. `permanent` says whether to retry. */
export class FetchError extends SnfVmcatcherError {
  readonly status?: number;
  constructor(message: string, opts: { permanent?: boolean; status?: number; cause?: unknown } = {}) {
    super(message, opts);
    this.status = opts.status;
  }
}

/** An image list failed signature or endorser verification, or its policy refused it. */
export class SignatureError extends SnfVmcatcherError {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, { permanent: true, ...opts });
  }
}

/** The image file is not what the event promised: checksum or size mismatch, bad format. */
export class ImageIntegrityError extends SnfVmcatcherError {
  constructor(message: string) {
    super(message, { permanent: true });
  }
}

/** An external program (qemu-img, kamaki, snf-mkimage) failed. */
export class ToolError extends SnfVmcatcherError {
  readonly exitCode?: number;
  constructor(message: string, opts: { permanent?: boolean; exitCode?: number; cause?: unknown } = {}) {
    super(message, opts);
    this.exitCode = opts.exitCode;
  }
}

/**
 * A step needs more disk space than the working folder has free right now. `canEverFit` says
 * whether waiting can help: true when other images' files hold the space (the workflow waits,
 * with a visible stage), false when the filesystem is too small for this image at all.
 */
export class OutOfSpaceError extends SnfVmcatcherError {
  readonly neededBytes: number;
  readonly freeBytes: number;
  readonly canEverFit: boolean;
  constructor(message: string, opts: { neededBytes: number; freeBytes: number; canEverFit: boolean; cause?: unknown }) {
    // Not retried by the activity: refilling the disk on every attempt starves the host's other
    // images. The workflow waits for space (or fails when it can never fit) instead.
    super(message, { permanent: true, cause: opts.cause });
    this.neededBytes = opts.neededBytes;
    this.freeBytes = opts.freeBytes;
    this.canEverFit = opts.canEverFit;
  }
}
