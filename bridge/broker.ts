import os from 'node:os';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { deadLetterQueue, type RabbitConfig } from '../core/config.js';
import { BrokerError } from '../core/errors.js';

/** An open AMQP connection with one confirm channel on which the topology is declared. */
export interface BrokerSession {
  connection: ChannelModel;
  channel: ConfirmChannel;
  /** The `host:port` that answered. */
  server: string;
  close(): Promise<void>;
}

function brokerUrl(rabbit: RabbitConfig, server: string): string {
  const [host, port = '5672'] = server.split(':');
  const user = encodeURIComponent(rabbit.username);
  const pass = encodeURIComponent(rabbit.password);
  const vhost = encodeURIComponent(rabbit.vhost);
  return `amqp://${user}:${pass}@${host}:${port}/${vhost}?heartbeat=${rabbit.heartbeatSeconds}`;
}

/**
 * Declares what the original declared (durable topic exchange, durable queue, binding on
 * `routingKey`), plus the dead-letter queue. The main queue gets no extra arguments, so a
 * queue the Scala version declared is accepted as is.
 */
async function declareTopology(channel: Channel, rabbit: RabbitConfig): Promise<void> {
  await channel.assertExchange(rabbit.exchange, 'topic', { durable: true, autoDelete: false, internal: false });
  await channel.assertQueue(rabbit.queue, { durable: true, exclusive: false, autoDelete: false });
  await channel.bindQueue(rabbit.queue, rabbit.exchange, rabbit.routingKey);
  await channel.assertQueue(deadLetterQueue(rabbit), { durable: true, exclusive: false, autoDelete: false });
}

/** The AMQP connection name of a consumer (`snf-vmcatcher-bridge@host:pid`), so an operator, or a test, can find it. */
export function bridgeConnectionName(role = 'bridge'): string {
  return `snf-vmcatcher-${role}@${os.hostname()}:${process.pid}`;
}

interface OpenOptions {
  /** Shown in `rabbitmqctl list_connections` (client property `connection_name`). */
  connectionName?: string;
  /** Unacked deliveries the broker may push on this channel (consumers only). */
  prefetch?: number;
}

/**
 * Connects to the first server of `rabbitmq.servers` that answers (one attempt each; callers
 * decide on retries), opens one confirm channel and declares the topology.
 */
export async function openBroker(rabbit: RabbitConfig, opts: OpenOptions = {}): Promise<BrokerSession> {
  const failures: string[] = [];
  for (const server of rabbit.servers) {
    let connection: ChannelModel | undefined;
    try {
      connection = await amqp.connect(brokerUrl(rabbit, server), {
        timeout: rabbit.connectTimeoutMs,
        clientProperties: opts.connectionName ? { connection_name: opts.connectionName } : undefined,
      });
      connection.on('error', () => undefined); // surfaced through the failing operation instead
      const channel = await connection.createConfirmChannel();
      channel.on('error', () => undefined);
      await declareTopology(channel, rabbit);
      if (opts.prefetch) await channel.prefetch(opts.prefetch, false);
      const open = connection;
      return {
        connection: open,
        channel,
        server,
        async close() {
          // Channel first: amqplib may send the connection close ahead of acks and publishes
          // still queued on the channel, losing them.
          await channel.close().catch(() => undefined);
          await open.close().catch(() => undefined);
        },
      };
    } catch (err) {
      await connection?.close().catch(() => undefined);
      failures.push(`${server}: ${describeAmqpError(err)}`);
    }
  }
  throw new BrokerError(
    `cannot connect to RabbitMQ (vhost '${rabbit.vhost}', user '${rabbit.username}'): ${failures.join('; ')}`,
  );
}

export function describeAmqpError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  if (e?.code === 'ECONNREFUSED') return 'connection refused';
  if (e?.code === 'ETIMEDOUT' || /timeout/i.test(e?.message ?? '')) return 'timed out';
  if (/ACCESS_REFUSED|403/.test(e?.message ?? '')) return 'access refused (check username and password)';
  if (/NOT_ALLOWED|vhost/i.test(e?.message ?? '')) return `not allowed (${e.message})`;
  return e?.message ?? String(err);
}
