import { createHash } from 'node:crypto';
import type { RabbitConfig } from '../core/config.js';
import { BrokerError } from '../core/errors.js';
import { eventToFlat, type ImageEvent } from '../core/event.js';
import { openBroker, describeAmqpError, type BrokerSession } from './broker.js';

/**
 * Publishes events as the original flat JSON (docs/image-lists.md "Publishing") and waits for the broker's
 * confirm, so "published" means "the broker has it on disk".
 */
export interface Publisher {
  publishEvent(event: ImageEvent): Promise<PublishedMessage>;
  /** Publishes an already serialised flat message body (a spooled one). */
  publishBody(body: Buffer): Promise<PublishedMessage>;
  close(): Promise<void>;
}

export interface PublishedMessage {
  messageId: string;
  bytes: number;
}

export function serialiseEvent(event: ImageEvent): Buffer {
  return Buffer.from(`${JSON.stringify(eventToFlat(event), null, 2)}\n`, 'utf8');
}

/**
 * The message id is the sha256 of the body: the same event published twice (a spool replay
 * after a confirm that was lost, a re-run of enqueue-from-image-list) carries the same id,
 * so consumers and operators can recognise the duplicate. Different events never share it.
 */
function messageIdFor(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex');
}

export async function openPublisher(rabbit: RabbitConfig): Promise<Publisher> {
  return publisherOn(await openBroker(rabbit), rabbit);
}

function publisherOn(session: BrokerSession, rabbit: RabbitConfig): Publisher {
  const { channel } = session;
  let returned: string | undefined;
  // mandatory + basic.return: a message no queue binding accepts is an error, not a silent drop
  // (the original's routing-key bug lost messages exactly that way).
  channel.on('return', (msg: { properties: { messageId?: string }; fields: { replyText?: string } }) => {
    returned = `${msg.properties.messageId ?? '?'}: ${msg.fields.replyText ?? 'unroutable'}`;
  });
  let closedReason: string | undefined;
  session.connection.on('close', (err?: unknown) => {
    closedReason = err ? describeAmqpError(err) : 'connection closed';
  });

  async function publishBody(body: Buffer): Promise<PublishedMessage> {
    if (closedReason) throw new BrokerError(`cannot publish: RabbitMQ ${closedReason}`);
    const messageId = messageIdFor(body);
    returned = undefined;
    const confirmed = new Promise<void>((resolve, reject) => {
      try {
        channel.publish(
          rabbit.exchange,
          rabbit.routingKey,
          body,
          {
            persistent: true,
            contentType: 'application/json',
            contentEncoding: 'utf-8',
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            mandatory: true,
            appId: 'snf-vmcatcher',
          },
          (err) =>
            err ? reject(new BrokerError(`RabbitMQ refused message ${messageId} (nack)`, { cause: err })) : resolve(),
        );
      } catch (err) {
        reject(new BrokerError(`cannot publish: ${describeAmqpError(err)}`, { cause: err }));
      }
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BrokerError(
              `RabbitMQ did not confirm message ${messageId} within ${rabbit.confirmTimeoutMs} ms (rabbitmq.confirmTimeoutMs)`,
            ),
          ),
        rabbit.confirmTimeoutMs,
      );
    });
    try {
      await Promise.race([confirmed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    if (returned) {
      throw new BrokerError(
        `RabbitMQ could not route message ${returned} (exchange '${rabbit.exchange}', routing key '${rabbit.routingKey}': is queue '${rabbit.queue}' bound to it?)`,
      );
    }
    return { messageId, bytes: body.length };
  }

  return {
    publishBody,
    publishEvent: (event) => publishBody(serialiseEvent(event)),
    close: () => session.close(),
  };
}
