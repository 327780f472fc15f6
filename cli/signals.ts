import type { Logger } from '../core/logging.js';

/**
 * Waits for `done`, calling `stop` on the first SIGTERM or SIGINT. A second signal exits at
 * once, for an operator who does not want to wait for the grace period.
 */
export async function untilSignal(
  done: Promise<unknown>,
  stop: () => void | Promise<void>,
  logger: Logger,
): Promise<void> {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, 'stopping gracefully');
    void Promise.resolve(stop()).catch((err: unknown) => logger.error({ err }, 'error while stopping'));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await done;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
