/**
 * The dead-letter queue (`<queue>.dead`), for the `dead-letters` commands: read what waits there
 * without disturbing it, and take chosen messages out of it (republished to the queue, or purged)
 * so that nothing is lost when the command dies midway.
 *
 * Reading: every message is got unacked on one channel, then the channel is closed and the broker
 * puts them all back where they were. A get followed by a nack-requeue would hand the same message
 * back at once (and a consumer would see the queue in a different order).
 *
 * Taking: each chosen message is got, published to the queue, confirmed by the broker, and only then
 * acked; the messages not chosen stay unacked until the channel closes, so they keep their place.
 * Killed between the confirm and the ack, the message is on both queues (a duplicate, which the
 * workflow id absorbs), never on neither.
 */
import { createHash } from 'node:crypto';
import type { ConfirmChannel, GetMessage, Options } from 'amqplib';
import { deadLetterQueue, type RabbitConfig } from '../core/config.js';
import { EVENT_FIELDS } from '../core/event.js';
import { BrokerError } from '../core/errors.js';
import { describeAmqpError, openBroker } from './broker.js';
import {
  carriedProperties,
  DEAD_LETTER_ID_HEADER,
  DEAD_LETTERED_AT_HEADER,
  DETAIL_HEADER,
  KEY_HEADER,
  ORIGINAL_QUEUE_HEADER,
  REASON_HEADER,
  REPLAYS_HEADER,
} from './messages.js';

/** One message of the dead-letter queue, as an operator reads it. */
export interface DeadLetter {
  /** Its place in the dead-letter queue when it was read, from 1. */
  position: number;
  /**
   * The id the bridge gave it when dead-lettering it; for a message dead-lettered otherwise (by
   * RabbitMQ, by an older bridge) a digest of its content and dead-letter headers, stable as well.
   */
  id: string;
  deadLetteredAt?: Date;
  /** Why: the bridge's reason (`invalid-json`, `missing-key`, `rejected-by-temporal`, …) or `rabbitmq-<x-death reason>`. */
  reason: string;
  /** The flat key that was wrong, when one was. */
  key?: string;
  detail?: string;
  originalQueue?: string;
  imageIdentifier?: string;
  imageListIdentifier?: string;
  title?: string;
  messageId?: string;
  /** How many times it was replayed before. */
  replays: number;
  headers: Record<string, unknown>;
  body: Buffer;
}

type Properties = GetMessage['properties'];

/** The text of a header value (amqplib gives long strings as Buffers). */
function headerText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return undefined;
}

/** An AMQP timestamp (seconds; amqplib may wrap it) as a Date. */
function amqpTime(value: unknown): Date | undefined {
  const raw = value && typeof value === 'object' && 'value' in value ? (value as { value: unknown }).value : value;
  if (raw instanceof Date) return raw;
  if (typeof raw === 'number' && Number.isFinite(raw)) return new Date(raw * 1000);
  return undefined;
}

interface XDeath {
  reason?: string;
  queue?: string;
  time?: Date;
  count?: number;
}

/** The most recent entry of RabbitMQ's own `x-death` header (when RabbitMQ dead-lettered the message itself). */
function lastXDeath(headers: Record<string, unknown>): XDeath | undefined {
  const entries = headers['x-death'];
  if (!Array.isArray(entries) || entries.length === 0) return undefined;
  // RabbitMQ keeps the most recent first.
  const first = entries[0] as Record<string, unknown>;
  return {
    reason: headerText(first.reason),
    queue: headerText(first.queue),
    time: amqpTime(first.time),
    count: typeof first.count === 'number' ? first.count : undefined,
  };
}

/** The flat event fields that name the image, read leniently: a dead letter is often not a valid event. */
function namedImage(body: Buffer): Pick<DeadLetter, 'imageIdentifier' | 'imageListIdentifier' | 'title'> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return {};
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return {};
  const flat = parsed as Record<string, unknown>;
  const text = (key: string) => (typeof flat[key] === 'string' && flat[key] ? (flat[key] as string) : undefined);
  return {
    imageIdentifier: text(EVENT_FIELDS.imageId),
    imageListIdentifier: text(EVENT_FIELDS.imageListId),
    title: text(EVENT_FIELDS.title),
  };
}

/** Reads one message of the dead-letter queue: when and why it came there, and the image it names. */
export function describeDeadLetter(msg: { content: Buffer; properties: Properties }, position: number): DeadLetter {
  const headers = { ...((msg.properties.headers as Record<string, unknown> | undefined) ?? {}) };
  const xDeath = lastXDeath(headers);
  const ours = headerText(headers[REASON_HEADER]);
  const at = headerText(headers[DEAD_LETTERED_AT_HEADER]);
  const atDate = at && !Number.isNaN(Date.parse(at)) ? new Date(at) : undefined;
  const letter: DeadLetter = {
    position,
    id: headerText(headers[DEAD_LETTER_ID_HEADER]) ?? contentId(msg.content, headers),
    deadLetteredAt: atDate ?? xDeath?.time,
    reason: ours ?? (xDeath?.reason ? `rabbitmq-${xDeath.reason}` : 'unknown'),
    key: headerText(headers[KEY_HEADER]),
    detail:
      headerText(headers[DETAIL_HEADER]) ??
      (xDeath
        ? `RabbitMQ dead-lettered it from queue '${xDeath.queue ?? '?'}' (${xDeath.reason ?? '?'}${xDeath.count && xDeath.count > 1 ? `, ${xDeath.count} times` : ''})`
        : undefined),
    originalQueue: headerText(headers[ORIGINAL_QUEUE_HEADER]) ?? xDeath?.queue,
    messageId: headerText(msg.properties.messageId),
    replays: Number(headerText(headers[REPLAYS_HEADER]) ?? 0) || 0,
    headers,
    body: msg.content,
    ...namedImage(msg.content),
  };
  return letter;
}

/** For a message that carries no dead-letter id: the same content and dead-letter headers, the same id. */
function contentId(body: Buffer, headers: Record<string, unknown>): string {
  const hash = createHash('sha256').update(body);
  hash.update(`\u0000${headerText(headers[DEAD_LETTERED_AT_HEADER]) ?? ''}`);
  hash.update(`\u0000${lastXDeath(headers)?.time?.toISOString() ?? ''}`);
  return hash.digest('hex').slice(0, 12);
}

/** Headers that describe one stay in the dead-letter queue: a replayed message leaves them behind. */
const DEAD_LETTER_HEADERS = [
  REASON_HEADER,
  KEY_HEADER,
  DETAIL_HEADER,
  ORIGINAL_QUEUE_HEADER,
  DEAD_LETTERED_AT_HEADER,
  DEAD_LETTER_ID_HEADER,
];

/**
 * Publish options of a replayed message: its own properties, persistent, without the headers of its
 * stay in the dead-letter queue (a new failure records its own), counting the replay. RabbitMQ's
 * `x-death` stays: the broker keeps counting its own dead-letterings there.
 */
export function replayPublishOptions(letter: DeadLetter, properties: Properties, now: Date): Options.Publish {
  const headers: Record<string, unknown> = { ...letter.headers };
  for (const name of DEAD_LETTER_HEADERS) delete headers[name];
  headers[REPLAYS_HEADER] = letter.replays + 1;
  headers['x-snf-vmcatcher-replayed-at'] = now.toISOString();
  return { persistent: true, mandatory: true, headers, ...carriedProperties(properties) };
}

/**
 * Every message of the dead-letter queue, in order, leaving the queue as it was (each message is
 * marked redelivered by the broker, which nothing reads on this queue).
 */
export async function readDeadLetters(rabbit: RabbitConfig): Promise<DeadLetter[]> {
  const session = await openBroker(rabbit);
  const letters: DeadLetter[] = [];
  try {
    const channel = await session.connection.createChannel();
    for (;;) {
      const msg = await channel.get(deadLetterQueue(rabbit), { noAck: false });
      if (msg === false) break;
      letters.push(describeDeadLetter(msg, letters.length + 1));
    }
    // Nothing acked: closing the channel puts every message back in its place.
    await channel.close();
  } finally {
    await session.close();
  }
  return letters;
}

/** What to do with a dead letter: `take` it (the handler's job, then it is acked) or `keep` it where it is. */
export type DeadLetterChoice = 'take' | 'keep';

interface TakeResult {
  /** The messages seen, in order (taken or kept). */
  seen: DeadLetter[];
  taken: DeadLetter[];
}

/**
 * One pass over the messages in the dead-letter queue when it starts: `choose` decides for each; a taken message is given
 * to `handle` and acked once `handle` resolves (after its publish is confirmed, for a replay). A
 * handler that throws stops the pass; that message and the rest stay where they were.
 */
export async function takeDeadLetters(
  rabbit: RabbitConfig,
  choose: (letter: DeadLetter) => DeadLetterChoice,
  handle: (letter: DeadLetter, channel: ConfirmChannel, properties: Properties) => Promise<void>,
): Promise<TakeResult> {
  const session = await openBroker(rabbit);
  const result: TakeResult = { seen: [], taken: [] };
  try {
    const { channel } = session;
    // Only the messages there now: one the bridge dead-letters again during the pass (a replayed
    // message that fails again) comes after them, and is not taken a second time.
    const { messageCount } = await channel.checkQueue(deadLetterQueue(rabbit));
    while (result.seen.length < messageCount) {
      const msg = await channel.get(deadLetterQueue(rabbit), { noAck: false });
      if (msg === false) break;
      const letter = describeDeadLetter(msg, result.seen.length + 1);
      result.seen.push(letter);
      if (choose(letter) === 'keep') continue;
      await handle(letter, channel, msg.properties);
      channel.ack(msg);
      result.taken.push(letter);
    }
    // The channel first: its acks reach the broker before the kept messages are handed back.
    await channel.close();
  } finally {
    await session.close();
  }
  return result;
}

/** Publishes a dead letter back to the queue (through the default exchange) and waits for the broker's confirm. */
export async function republish(
  rabbit: RabbitConfig,
  channel: ConfirmChannel,
  letter: DeadLetter,
  properties: Properties,
  now = new Date(),
): Promise<void> {
  let returned: string | undefined;
  const onReturn = (msg: { fields: { replyText?: string } }) => (returned = msg.fields.replyText ?? 'unroutable');
  channel.on('return', onReturn);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      new Promise<void>((resolve, reject) => {
        try {
          channel.sendToQueue(rabbit.queue, letter.body, replayPublishOptions(letter, properties, now), (err) =>
            err ? reject(new BrokerError(`RabbitMQ refused the replayed message ${letter.id} (nack)`)) : resolve(),
          );
        } catch (err) {
          reject(new BrokerError(`cannot publish: ${describeAmqpError(err)}`, { cause: err }));
        }
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new BrokerError(
                `RabbitMQ did not confirm the replayed message ${letter.id} within ${rabbit.confirmTimeoutMs} ms (rabbitmq.confirmTimeoutMs)`,
              ),
            ),
          rabbit.confirmTimeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    channel.removeListener('return', onReturn);
  }
  if (returned)
    throw new BrokerError(`RabbitMQ could not route the replayed message to queue '${rabbit.queue}': ${returned}`);
}
