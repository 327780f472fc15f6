import type { Config } from '../core/config.js';
import { BrokerError } from '../core/errors.js';
import type { Logger } from '../core/logging.js';
import { openPublisher, type PublishedMessage, type Publisher } from './publisher.js';
import { replaySpool, spoolMessage, type ReplayResult } from './spool.js';

interface ProduceOptions {
  /** Keep what could not be published in the spool instead of failing (the vmcatcher hook). */
  spoolOnFailure: boolean;
  /** Called before each new message is published (progress lines). */
  beforePublish?: (index: number) => void;
  /** Called after each message is confirmed. */
  onPublished?: (index: number, message: PublishedMessage) => void;
  /** Injected in tests; opens a confirm-channel publisher by default. */
  open?: (rabbit: Config['rabbitmq']) => Promise<Publisher>;
}

interface ProduceResult {
  published: number;
  spooled: string[];
  replay?: ReplayResult;
  /** Why messages were spooled, when they were. */
  brokerProblem?: string;
}

/**
 * What both producers do: connect, publish what an earlier run spooled (oldest first), then
 * publish the new messages with confirms. When the broker is away or does not confirm,
 * either spool what is left (nothing is lost) or fail.
 */
export async function produceMessages(
  config: Config,
  bodies: Buffer[],
  logger: Logger,
  opts: ProduceOptions,
): Promise<ProduceResult> {
  const result: ProduceResult = { published: 0, spooled: [] };
  const spoolRest = async (err: unknown, from: number): Promise<ProduceResult> => {
    if (!opts.spoolOnFailure || !(err instanceof BrokerError)) throw err;
    for (const body of bodies.slice(from)) result.spooled.push(await spoolMessage(config.spool.folder, body));
    result.brokerProblem = err.message;
    return result;
  };

  let publisher: Publisher;
  try {
    publisher = await (opts.open ?? openPublisher)(config.rabbitmq);
  } catch (err) {
    return spoolRest(err, 0);
  }
  try {
    try {
      result.replay = await replaySpool(config, publisher, logger);
    } catch (err) {
      return await spoolRest(err, 0);
    }
    for (let i = 0; i < bodies.length; i++) {
      opts.beforePublish?.(i);
      try {
        const message = await publisher.publishBody(bodies[i]);
        result.published++;
        opts.onPublished?.(i, message);
      } catch (err) {
        return await spoolRest(err, i);
      }
    }
    return result;
  } finally {
    await publisher.close().catch(() => undefined);
  }
}
