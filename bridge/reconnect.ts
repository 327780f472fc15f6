/**
 * The bridge's broker side: one named AMQP connection with a prefetch and a push consumer on
 * the main queue, re-established on its own (with backoff) whenever it is lost.
 */
import type { Message } from 'amqplib';
import { deadLetterQueue, type RabbitConfig } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { backoffMs, type Sleeps } from './backoff.js';
import { openBroker, type BrokerSession } from './broker.js';
import type { BridgeMetrics } from './metrics.js';

interface ReconnectingConsumerDeps {
  rabbit: RabbitConfig;
  connectionName: string;
  prefetch: number;
  maxBackoffMs: number;
  log: Logger;
  metrics: BridgeMetrics;
  /** The bridge's sleeps: stopped means the bridge is shutting down. */
  sleeps: Sleeps;
  /** False while consuming must wait (Temporal paused): the connection stays, without a consumer. */
  mayConsume(): boolean;
  /** Each delivery, with the session it came on (only that session's channel can settle it). */
  onMessage(session: BrokerSession, msg: Message): void;
  /** After each connect that ended with a consumer (or a deliberate pause). */
  onConnected(): void;
  /** How many messages are being handled, for the log. */
  inFlight(): number;
}

export class ReconnectingConsumer {
  private session?: BrokerSession;
  private consumerTag?: string;
  private connecting?: Promise<void>;
  private connectLoopRunning = false;

  constructor(private readonly deps: ReconnectingConsumerDeps) {}

  get connectionName(): string {
    return this.deps.connectionName;
  }

  get prefetch(): number {
    return this.deps.prefetch;
  }

  /** Whether `session` is still the live one (a message of a lost session is back on the queue already). */
  isCurrent(session: BrokerSession): boolean {
    return this.session === session;
  }

  /**
   * Starts the connect loop unless one is running: exactly one loop owns reconnecting. A
   * session that closes while the loop is at work is the loop's business (it retries); one
   * that closes after the loop has finished starts a new loop here.
   */
  connect(): void {
    if (this.deps.sleeps.stopped || this.connectLoopRunning) return;
    this.connectLoopRunning = true;
    this.connecting = this.connectLoop();
  }

  /** Starts the consumer on the current session, unless there is one or consuming must wait. */
  async startConsuming(): Promise<void> {
    const session = this.session;
    if (!session || this.consumerTag || !this.deps.mayConsume() || this.deps.sleeps.stopped) return;
    const { rabbit, log, metrics } = this.deps;
    const { consumerTag } = await session.channel.consume(rabbit.queue, (msg) => this.onDelivery(session, msg), {
      noAck: false,
    });
    if (this.session !== session) return;
    this.consumerTag = consumerTag;
    metrics.brokerConnected.set(1);
    log.info({ queue: rabbit.queue, consumerTag }, 'consuming');
  }

  /** Cancels the consumer (no new deliveries); the connection stays, so in-flight messages can still be settled. */
  async cancelConsumer(): Promise<void> {
    const session = this.session;
    const tag = this.consumerTag;
    this.consumerTag = undefined;
    if (!session || !tag) return;
    await session.channel.cancel(tag).catch(() => undefined);
  }

  /**
   * How many messages wait in the dead-letter queue, or undefined without a broker connection.
   * Asked on a channel of its own: a failed check closes that channel, never the consumer's.
   */
  async deadLetterDepth(): Promise<number | undefined> {
    const session = this.session;
    if (!session) return undefined;
    const channel = await session.connection.createChannel();
    channel.on('error', () => undefined);
    try {
      return (await channel.checkQueue(deadLetterQueue(this.deps.rabbit))).messageCount;
    } finally {
      await channel.close().catch(() => undefined);
    }
  }

  /** Closes the current session; the connect loop opens a new one. */
  restart(): void {
    void this.session?.close();
  }

  /** For shutdown: no consumer, no connect loop at work (sleeps must be stopped first). */
  async stopConsuming(): Promise<void> {
    await this.cancelConsumer();
    await this.connecting?.catch(() => undefined);
  }

  /** For shutdown, once every in-flight message is settled. */
  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    await session?.close();
    this.deps.metrics.brokerConnected.set(0);
  }

  private async connectLoop(): Promise<void> {
    const { rabbit, connectionName, prefetch, maxBackoffMs, log, metrics, sleeps } = this.deps;
    try {
      for (let attempt = 0; !sleeps.stopped; attempt++) {
        let session: BrokerSession | undefined;
        try {
          session = await openBroker(rabbit, { connectionName, prefetch });
          if (sleeps.stopped) {
            await session.close();
            break;
          }
          this.adopt(session);
          log.info({ server: session.server, attempts: attempt + 1 }, 'connected to RabbitMQ');
          await this.startConsuming();
          // Checked synchronously before the loop ends: a close that came before this point
          // has cleared this.session and the loop goes round again; a later one finds no loop
          // running and starts one.
          if (this.session !== session) throw new Error('the connection closed while the consumer was starting');
          if (!this.consumerTag && this.deps.mayConsume() && !sleeps.stopped)
            throw new Error('the consumer did not start');
          this.connectLoopRunning = false;
          this.deps.onConnected();
          return;
        } catch (err) {
          metrics.errors.inc({ kind: 'broker-connection' });
          if (session) await this.drop(session);
          if (sleeps.stopped) break;
          const delay = backoffMs(attempt, maxBackoffMs);
          log.warn(
            { err: (err as Error).message, attempt: attempt + 1, retryInMs: delay },
            'cannot connect to RabbitMQ; retrying',
          );
          await sleeps.sleep(delay);
        }
      }
    } finally {
      this.connectLoopRunning = false;
    }
  }

  /** Makes `session` the current one and watches it; any session it replaces is closed. */
  private adopt(session: BrokerSession): void {
    const { log } = this.deps;
    const previous = this.session;
    if (previous && previous !== session) void this.drop(previous);
    this.session = session;
    this.consumerTag = undefined;
    session.connection.on('error', (err: Error) => log.warn({ err: err.message }, 'broker connection error'));
    session.channel.on('error', (err: Error) => log.warn({ err: err.message }, 'broker channel error'));
    session.connection.on('close', () => this.onSessionClosed(session));
    session.channel.on('close', () => {
      // A channel closed by the broker under an open connection: drop the connection too, and start over.
      if (this.session === session) void session.close();
    });
  }

  /** Forgets `session` (when current) and closes it. */
  private async drop(session: BrokerSession): Promise<void> {
    if (this.session === session) this.forget();
    await session.close();
  }

  private forget(): void {
    this.session = undefined;
    this.consumerTag = undefined;
    this.deps.metrics.brokerConnected.set(0);
  }

  private onSessionClosed(session: BrokerSession): void {
    if (this.session !== session) return;
    this.forget();
    // While the connect loop runs, a session that closes is one it is setting up: it retries.
    if (this.deps.sleeps.stopped || this.connectLoopRunning) return;
    this.deps.metrics.errors.inc({ kind: 'broker-connection' });
    // Unacked messages of the lost channel go back to the queue; their in-flight starts
    // finish, and the redelivery is absorbed by the workflow id.
    this.deps.log.warn({ inFlight: this.deps.inFlight() }, 'RabbitMQ connection lost; reconnecting');
    this.connect();
  }

  private onDelivery(session: BrokerSession, msg: Message | null): void {
    if (msg === null) {
      // The broker cancelled us (queue deleted): reconnecting declares the queue again.
      this.deps.log.warn('the broker cancelled the consumer; reconnecting');
      void session.close();
      return;
    }
    this.deps.onMessage(session, msg);
  }
}
