/**
 * What becomes of one queue message, shared by the bridge (`dequeue --server`, bridge/consumer.ts)
 * and the one-shot `dequeue` (basic.get): turn the message into an event and a workflow start
 * (a decision), then ack it, put it back, or move it to the dead-letter queue (its settlement).
 */
import { randomBytes } from 'node:crypto';
import type { ConfirmChannel, Message, Options } from 'amqplib';
import type { Client } from '@temporalio/client';
import { deadLetterQueue, type Config, type RabbitConfig } from '../core/config.js';
import { eventFromMessageBody, InvalidEventError, type ImageEvent, type InvalidEventReason } from '../core/event.js';
import { startWorkflowForEvent, type StartResult } from '../core/starter.js';
import { SEARCH_ATTRIBUTES, type RegistrationOptions, type RegistrationSite } from '../core/workflow-contract.js';

// ---------------------------------------------------------------------------------------
// Pure decisions

/** Why a message went to the dead-letter queue (the `x-snf-vmcatcher-reason` header). */
type DeadLetterReason = InvalidEventReason | 'rejected-by-temporal';

interface DeadLetterCause {
  reason: DeadLetterReason;
  /** The flat key that was wrong, when one was. */
  key?: string;
  /** The one-line explanation. */
  detail: string;
}

export const REASON_HEADER = 'x-snf-vmcatcher-reason';
export const KEY_HEADER = 'x-snf-vmcatcher-key';
export const DETAIL_HEADER = 'x-snf-vmcatcher-error';
export const ORIGINAL_QUEUE_HEADER = 'x-snf-vmcatcher-original-queue';
export const DEAD_LETTERED_AT_HEADER = 'x-snf-vmcatcher-dead-lettered-at';
const ORIGINAL_USER_ID_HEADER = 'x-snf-vmcatcher-original-user-id';
/**
 * A short id of this dead letter, given when it is dead-lettered and never changed while it waits:
 * what `dead-letters show` and `dead-letters replay` name it by (a position in the queue shifts).
 */
export const DEAD_LETTER_ID_HEADER = 'x-snf-vmcatcher-dead-letter-id';
/** How many times `dead-letters replay` sent this message back to the queue (kept if it is dead-lettered again). */
export const REPLAYS_HEADER = 'x-snf-vmcatcher-replays';

/** A new dead-letter id: 12 hex digits. */
function newDeadLetterId(): string {
  return randomBytes(6).toString('hex');
}

/** Classifies an InvalidEventError (from parsing or from the starter's checks). */
export function deadLetterCause(err: InvalidEventError): DeadLetterCause {
  return err.key
    ? { reason: err.reason, key: err.key, detail: err.message }
    : { reason: err.reason, detail: err.message };
}

/** What a failed start means for the message. */
type StartFailure =
  /** The event is not valid: dead-letter it. */
  | { kind: 'invalid'; cause: DeadLetterCause }
  /**
   * Temporal is unreachable, overloaded or did not answer in time (or said something we
   * cannot act on per message): keep the message, pause, probe, resume. Never dead-letter
   * on these, or an outage would empty the queue into the dead-letter queue.
   */
  | { kind: 'unavailable'; detail: string };

/** gRPC status codes (stable, from the gRPC spec) the bridge tells apart. */
const GRPC_STATUS_NAMES: Readonly<Record<number, string>> = {
  1: 'CANCELLED',
  2: 'UNKNOWN',
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  5: 'NOT_FOUND',
  7: 'PERMISSION_DENIED',
  8: 'RESOURCE_EXHAUSTED',
  9: 'FAILED_PRECONDITION',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
  16: 'UNAUTHENTICATED',
};
const INVALID_ARGUMENT = 3;

/** The gRPC status code of a Temporal client error, looking through its `cause` chain. */
function grpcCode(err: unknown): number | undefined {
  for (
    let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0;
    e && depth < 5;
    e = e.cause as typeof e, depth++
  ) {
    if (typeof e.code === 'number') return e.code;
  }
  return undefined;
}

export function classifyStartFailure(err: unknown): StartFailure {
  if (err instanceof InvalidEventError) return { kind: 'invalid', cause: deadLetterCause(err) };
  const code = grpcCode(err);
  const detail = (err as Error)?.message ?? String(err);
  const causeDetail = ((err as { cause?: Error })?.cause?.message ?? '').split('\n')[0];
  const line = causeDetail && causeDetail !== detail ? `${detail}: ${causeDetail}` : detail;
  // INVALID_ARGUMENT is Temporal refusing this one start request (e.g. an id or search
  // attribute it does not accept): retrying the same message can never succeed.
  if (code === INVALID_ARGUMENT) {
    return {
      kind: 'invalid',
      cause: { reason: 'rejected-by-temporal', detail: `Temporal refused the start: ${line}` },
    };
  }
  return { kind: 'unavailable', detail: code === undefined ? line : `${GRPC_STATUS_NAMES[code] ?? code}: ${line}` };
}

/**
 * Publish options for the dead-lettered copy: the original properties, plus the reason.
 * `expiration` is dropped (a dead letter must not vanish) and `userId` moves to a header
 * (RabbitMQ refuses a user-id that is not the publishing user's).
 */
export function deadLetterPublishOptions(
  properties: Message['properties'],
  cause: DeadLetterCause,
  origin: { queue: string; redelivered: boolean; now: Date; id?: string },
): Options.Publish {
  const headers: Record<string, unknown> = { ...(properties.headers ?? {}) };
  headers[REASON_HEADER] = cause.reason;
  if (cause.key) headers[KEY_HEADER] = cause.key;
  else delete headers[KEY_HEADER];
  headers[DETAIL_HEADER] = cause.detail.slice(0, 1000);
  headers[ORIGINAL_QUEUE_HEADER] = origin.queue;
  headers[DEAD_LETTERED_AT_HEADER] = origin.now.toISOString();
  headers[DEAD_LETTER_ID_HEADER] = origin.id ?? newDeadLetterId();
  if (properties.userId) headers[ORIGINAL_USER_ID_HEADER] = String(properties.userId);
  return { persistent: true, headers, ...carriedProperties(properties) };
}

/**
 * The properties a message keeps when it moves between the queue and the dead-letter queue, either
 * way: not `expiration` (it must not vanish on the way), not `userId` (RabbitMQ refuses a foreign one).
 */
export function carriedProperties(properties: Message['properties']): Options.Publish {
  const carried: Record<string, unknown> = {};
  const names = [
    'contentType',
    'contentEncoding',
    'priority',
    'correlationId',
    'replyTo',
    'messageId',
    'timestamp',
    'type',
    'appId',
  ] as const;
  for (const name of names) {
    const value = properties[name] as unknown;
    if (value !== undefined && value !== null) carried[name] = value;
  }
  return carried as Options.Publish;
}

// ---------------------------------------------------------------------------------------
// Dead letters

/** Publishes the dead-lettered copy through the default exchange and waits for the broker's confirm. */
async function publishDeadLetter(
  channel: ConfirmChannel,
  rabbit: RabbitConfig,
  msg: Message,
  cause: DeadLetterCause,
): Promise<void> {
  const options = deadLetterPublishOptions(msg.properties, cause, {
    queue: rabbit.queue,
    redelivered: msg.fields.redelivered,
    now: new Date(),
  });
  await new Promise<void>((resolve, reject) => {
    channel.sendToQueue(deadLetterQueue(rabbit), msg.content, options, (err) => (err ? reject(err) : resolve()));
  });
}

// ---------------------------------------------------------------------------------------
// One message → one decision

export type MessageDecision =
  | { kind: 'start'; event: ImageEvent; result: StartResult }
  | { kind: 'invalid'; cause: DeadLetterCause }
  | { kind: 'unavailable'; detail: string }
  /**
   * The Temporal namespace is not set up for this service (its search attributes are not
   * registered): no message can start until an operator fixes it. Keep every message.
   */
  | { kind: 'misconfigured'; detail: string; missing: string[] };

interface StartContext {
  client: Client;
  config: Config;
  options: RegistrationOptions;
  /** The worker's cloud (clouds/index.ts registrationSite): with the options, the registration's target. */
  site: RegistrationSite;
  /** A start that takes longer counts as "Temporal unavailable" (its outcome is settled by the workflow id on redelivery). */
  startTimeoutMs: number;
}

/** Parses a message body and starts the workflow its event calls for. Never throws. */
export async function decideMessage(ctx: StartContext, body: Buffer): Promise<MessageDecision> {
  let event: ImageEvent;
  try {
    event = eventFromMessageBody(body);
  } catch (err) {
    const failure = classifyStartFailure(err);
    if (failure.kind === 'invalid') return failure;
    return { kind: 'invalid', cause: { reason: 'invalid-value', detail: failure.detail } };
  }
  try {
    const result = await ctx.client.withDeadline(Date.now() + ctx.startTimeoutMs, () =>
      startWorkflowForEvent(ctx.client, ctx.config, event, ctx.options, ctx.site),
    );
    return { kind: 'start', event, result };
  } catch (err) {
    const failure = classifyStartFailure(err);
    if (failure.kind !== 'invalid' || failure.cause.reason !== 'rejected-by-temporal' || !mentionsSearchAttribute(err))
      return failure;
    // Every start sets the same search attributes: a refusal that names one is either about
    // this event's value (dead-letter it) or about the namespace (keep everything). The
    // server's list of registered attributes tells which.
    let missing: string[];
    try {
      missing = await missingSearchAttributes(ctx.client, ctx.config.temporal.namespace, ctx.startTimeoutMs);
    } catch (listErr) {
      return {
        kind: 'unavailable',
        detail: `${failure.cause.detail}; and the search attributes could not be listed: ${(listErr as Error).message}`,
      };
    }
    // A server that lists them but still says "not defined" has not refreshed its cache yet.
    if (missing.length === 0) missing = undefinedInMessage(err);
    if (missing.length === 0) return failure;
    return {
      kind: 'misconfigured',
      missing,
      detail: searchAttributesAdvice(ctx.config.temporal.namespace, missing, failure.cause.detail),
    };
  }
}

// ---------------------------------------------------------------------------------------
// One decision → what happens to the message

/** What became of a message once its decision was carried out. */
export type Settled =
  | { how: 'acked' }
  | { how: 'requeued' }
  | { how: 'dead-lettered'; cause: DeadLetterCause }
  /**
   * The broker did not confirm the dead-lettered copy: the message is left unsettled. The caller
   * puts it back (not at once, or a broker that refuses every publish turns into a hot loop) or
   * lets the closing channel return it.
   */
  | { how: 'dead-letter-failed'; cause: DeadLetterCause; error: Error };

/**
 * The one mapping from a decision to the queue, for the bridge and the one-shot `dequeue`: a
 * started (or ignored) event is acked; an invalid one is copied to the dead-letter queue and,
 * once the broker confirms the copy, acked; a message that is not at fault (Temporal unavailable,
 * or its namespace misconfigured) goes back to the queue. Ack and nack throw on a closed channel.
 */
export async function settleMessage(
  channel: ConfirmChannel,
  rabbit: RabbitConfig,
  msg: Message,
  decision: MessageDecision,
): Promise<Settled> {
  switch (decision.kind) {
    case 'start':
      channel.ack(msg);
      return { how: 'acked' };
    case 'invalid':
      try {
        await publishDeadLetter(channel, rabbit, msg, decision.cause);
      } catch (err) {
        return { how: 'dead-letter-failed', cause: decision.cause, error: err as Error };
      }
      channel.ack(msg);
      return { how: 'dead-lettered', cause: decision.cause };
    case 'unavailable':
    case 'misconfigured':
      channel.nack(msg, false, true);
      return { how: 'requeued' };
  }
}

function errorMessages(err: unknown): string {
  const messages: string[] = [];
  for (
    let e = err as { message?: string; cause?: unknown } | undefined, depth = 0;
    e && depth < 5;
    e = e.cause as typeof e, depth++
  ) {
    messages.push(e.message ?? '');
  }
  return messages.join('\n');
}

function mentionsSearchAttribute(err: unknown): boolean {
  return /search ?attribute/i.test(errorMessages(err));
}

/** Our search attributes the server calls undefined ("search attribute X is not defined", "… no mapping defined for search attribute X"). */
function undefinedInMessage(err: unknown): string[] {
  const text = errorMessages(err);
  return SEARCH_ATTRIBUTES.filter(
    ({ name }) =>
      new RegExp(`search attribute ${name} is not defined`).test(text) ||
      new RegExp(`no mapping defined for search attribute ${name}\\b`).test(text),
  ).map(({ name, type }) => `${name} (${type})`);
}

/** Gives the Temporal IndexedValueType enum value of a search attribute type name ('Keyword' → 2). */
const INDEXED_VALUE_TYPES: Readonly<Record<string, number>> = {
  Text: 1,
  Keyword: 2,
  Int: 3,
  Double: 4,
  Bool: 5,
  Datetime: 6,
  KeywordList: 7,
};

/**
 * The search attributes of the workflow contract that the namespace lacks (or has with another
 * type), as `Name (Type)`.
 */
export async function missingSearchAttributes(client: Client, namespace: string, timeoutMs: number): Promise<string[]> {
  const response = await client.withDeadline(Date.now() + timeoutMs, () =>
    client.connection.operatorService.listSearchAttributes({ namespace }),
  );
  const known: Record<string, unknown> = { ...(response.systemAttributes ?? {}), ...(response.customAttributes ?? {}) };
  return SEARCH_ATTRIBUTES.filter(({ name, type }) => {
    const registered = known[name];
    if (registered === undefined || registered === null) return true;
    // Enum values may arrive as numbers or as their names, depending on the decoder.
    return (
      registered !== INDEXED_VALUE_TYPES[type] &&
      registered !== type &&
      registered !== `INDEXED_VALUE_TYPE_${type.toUpperCase()}`
    );
  }).map(({ name, type }) => `${name} (${type})`);
}

/** The one message an operator needs: what is missing, where, and the command that fixes it. */
export function searchAttributesAdvice(namespace: string, missing: string[], serverSaid: string): string {
  const flags = SEARCH_ATTRIBUTES.map(({ name, type }) => `--name ${name} --type ${type}`).join(' ');
  return (
    `the Temporal namespace '${namespace}' lacks the search attributes ${missing.join(', ')} that every workflow start sets ` +
    `(${serverSaid}). Register them once, e.g. \`temporal operator search-attribute create --namespace ${namespace} ${flags}\` ` +
    `(the bridge resumes by itself once they exist; see docs/operations.md)`
  );
}
