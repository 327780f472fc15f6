/**
 * The bridge: a push consumer on the main queue that turns every message into exactly one
 * workflow start (the workflow id absorbs redeliveries and duplicates), acks only after
 * the start, dead-letters what is not a valid event, reconnects to RabbitMQ on its own, and
 * pauses while Temporal does not answer.
 */
import type { Message } from 'amqplib';
import { Client, Connection } from '@temporalio/client';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import type { RegistrationOptions } from '../core/workflow-contract.js';
import {
  bridgeConnectionName,
  connectConsumer,
  decideMessage,
  missingSearchAttributes,
  publishDeadLetter,
  temporalAnswers,
  type ConsumerSession,
  type MessageDecision,
} from './consumer.js';
import { openPublisher } from './publisher.js';
import { replaySpool, spoolFolderProblem, spoolNeedsReplay } from './spool.js';
import { createBridgeMetrics, serveMetrics, type BridgeMetrics } from './metrics.js';

export interface BridgeOptions {
  /** Carried to every workflow the bridge starts (--handler, --kamaki-cloud, --insecure-ssl). */
  registration?: RegistrationOptions;
  /** Unacked messages the broker may push at once; default config.rabbitmq.prefetch. */
  prefetch?: number;
  /** Pause between messages (the original -sleepMillis); default config.bridge.sleepMillis. 0 = no pacing. */
  sleepMillis?: number;
  /** Port for GET /metrics; default config.bridge.metricsPort. 0 = off. */
  metricsPort?: number;
  /** AMQP connection name (client property `connection_name`). */
  connectionName?: string;
  /** A workflow start slower than this counts as "Temporal unavailable". */
  startTimeoutMs?: number;
  /** Longest wait between broker reconnect attempts and between Temporal probes. */
  maxBackoffMs?: number;
}

export interface BridgeDeps {
  config: Config;
  logger: Logger;
  /** A Temporal client to share (e.g. with the worker); the bridge opens its own when absent. */
  client?: Client;
  options?: BridgeOptions;
}

export interface RunningBridge {
  /** Stops consuming, lets in-flight starts finish and ack, closes. Idempotent. */
  stop(): Promise<void>;
  /** Resolves once the bridge has stopped. */
  done: Promise<void>;
  metrics: BridgeMetrics;
  /** The port /metrics listens on, when served. */
  metricsPort?: number;
}

/** Exponential backoff from 500 ms, capped. */
export function backoffMs(attempt: number, maxMs: number): number {
  return Math.min(maxMs, 500 * 2 ** Math.min(attempt, 16));
}

export async function startBridge(deps: BridgeDeps): Promise<RunningBridge> {
  const bridge = new Bridge(deps);
  await bridge.start();
  return {
    stop: () => bridge.stop(),
    done: bridge.done,
    metrics: bridge.metrics,
    metricsPort: bridge.metricsPort,
  };
}

class Bridge {
  readonly metrics = createBridgeMetrics();
  metricsPort?: number;
  readonly done: Promise<void>;

  private readonly config: Config;
  private readonly log: Logger;
  private readonly client: Client;
  private readonly ownConnection?: Connection;
  private readonly registration: RegistrationOptions;
  private readonly prefetch: number;
  private readonly sleepMillis: number;
  private readonly metricsPortOption: number;
  private readonly connectionName: string;
  private readonly startTimeoutMs: number;
  private readonly maxBackoffMs: number;

  private session?: ConsumerSession;
  private consumerTag?: string;
  /** Not consuming because of Temporal: unreachable, or its namespace is not set up for us. */
  private paused = false;
  private pauseKind: 'unavailable' | 'misconfigured' = 'unavailable';
  private stopping = false;
  /** Consecutive "Temporal unavailable" outcomes; reset only by a successful start, so a resume that fails again backs off further. */
  private unavailableStreak = 0;
  private readonly inFlight = new Set<Promise<void>>();
  /** Serialises messages when pacing (sleepMillis > 0). */
  private paced: Promise<void> = Promise.resolve();
  private readonly sleepers = new Set<() => void>();
  private metricsServer?: { port: number; close(): Promise<void> };
  private markDone!: () => void;
  private connecting?: Promise<void>;
  private connectLoopRunning = false;
  private replaying?: Promise<void>;
  private replayAgain = false;

  constructor(deps: BridgeDeps) {
    const opts = deps.options ?? {};
    this.config = deps.config;
    this.log = deps.logger;
    if (deps.client) {
      this.client = deps.client;
    } else {
      // Lazy: a Temporal server that is down at start is handled like any later outage (pause, probe, resume).
      this.ownConnection = Connection.lazy({
        address: deps.config.temporal.address,
        tls: deps.config.temporal.tls || undefined,
        apiKey: deps.config.temporal.apiKey,
      });
      this.client = new Client({ connection: this.ownConnection, namespace: deps.config.temporal.namespace });
    }
    this.registration = opts.registration ?? {};
    this.prefetch = opts.prefetch ?? deps.config.rabbitmq.prefetch;
    this.sleepMillis = opts.sleepMillis ?? deps.config.bridge.sleepMillis;
    this.metricsPortOption = opts.metricsPort ?? deps.config.bridge.metricsPort;
    this.connectionName = opts.connectionName ?? bridgeConnectionName();
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.done = new Promise<void>((resolve) => (this.markDone = resolve));
  }

  async start(): Promise<void> {
    if (this.metricsPortOption > 0) {
      this.metricsServer = await serveMetrics(this.metrics.registry, this.metricsPortOption);
      this.metricsPort = this.metricsServer.port;
      this.log.info({ port: this.metricsPort }, `metrics at http://0.0.0.0:${this.metricsPort}/metrics`);
    }
    this.log.info(
      {
        queue: this.config.rabbitmq.queue,
        prefetch: this.prefetch,
        sleepMillis: this.sleepMillis,
        connectionName: this.connectionName,
        temporal: this.config.temporal.address,
        taskQueue: this.config.temporal.taskQueue,
        registration: this.registration,
      },
      'bridge starting',
    );
    if (this.registration.insecureSsl) this.log.warn('insecure TLS is ON for the image downloads of every event this bridge starts');
    const problem = await spoolFolderProblem(this.config.spool.folder).catch(() => undefined);
    if (problem) this.log.warn({ folder: this.config.spool.folder }, `the bridge may not be able to replay spooled events: ${problem} See docs/image-lists.md`);
    this.reconnect();
  }

  async stop(): Promise<void> {
    if (this.stopping) return this.done;
    this.stopping = true;
    for (const wake of [...this.sleepers]) wake();
    this.log.info({ inFlight: this.inFlight.size }, 'bridge stopping: no new messages, finishing in-flight starts');
    await this.cancelConsumer();
    await this.connecting?.catch(() => undefined);
    await this.replaying?.catch(() => undefined);
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    const session = this.session;
    this.session = undefined;
    await session?.close();
    this.metrics.brokerConnected.set(0);
    await this.metricsServer?.close();
    await this.ownConnection?.close().catch(() => undefined);
    this.log.info('bridge stopped');
    this.markDone();
  }

  // --- broker side -----------------------------------------------------------------------

  /**
   * Starts the connect loop unless one is running: exactly one loop owns reconnecting. A
   * session that closes while the loop is at work is the loop's business (it retries); one
   * that closes after the loop has finished starts a new loop here.
   */
  private reconnect(): void {
    if (this.stopping || this.connectLoopRunning) return;
    this.connectLoopRunning = true;
    this.connecting = this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    try {
      for (let attempt = 0; !this.stopping; attempt++) {
        let session: ConsumerSession | undefined;
        try {
          session = await connectConsumer(this.config.rabbitmq, { connectionName: this.connectionName, prefetch: this.prefetch });
          if (this.stopping) {
            await session.close();
            break;
          }
          this.adopt(session);
          this.log.info({ server: session.server, attempts: attempt + 1 }, 'connected to RabbitMQ');
          await this.startConsuming();
          // Checked synchronously before the loop ends: a close that came before this point
          // has cleared this.session and the loop goes round again; a later one finds no loop
          // running and starts one.
          if (this.session !== session) throw new Error('the connection closed while the consumer was starting');
          if (!this.consumerTag && !this.paused && !this.stopping) throw new Error('the consumer did not start');
          this.connectLoopRunning = false;
          this.requestSpoolReplay();
          return;
        } catch (err) {
          this.metrics.errors.inc({ kind: 'broker-connection' });
          if (session) await this.drop(session);
          if (this.stopping) break;
          const delay = backoffMs(attempt, this.maxBackoffMs);
          this.log.warn({ err: (err as Error).message, attempt: attempt + 1, retryInMs: delay }, 'cannot connect to RabbitMQ; retrying');
          await this.sleep(delay);
        }
      }
    } finally {
      this.connectLoopRunning = false;
    }
  }

  /** Makes `session` the current one and watches it; any session it replaces is closed. */
  private adopt(session: ConsumerSession): void {
    const previous = this.session;
    if (previous && previous !== session) void this.drop(previous);
    this.session = session;
    this.consumerTag = undefined;
    session.connection.on('error', (err: Error) => this.log.warn({ err: err.message }, 'broker connection error'));
    session.channel.on('error', (err: Error) => this.log.warn({ err: err.message }, 'broker channel error'));
    session.connection.on('close', () => this.onSessionClosed(session));
    session.channel.on('close', () => {
      // A channel closed by the broker under an open connection: drop the connection too, and start over.
      if (this.session === session) void session.close();
    });
  }

  /** Forgets `session` (when current) and closes it. */
  private async drop(session: ConsumerSession): Promise<void> {
    if (this.session === session) {
      this.session = undefined;
      this.consumerTag = undefined;
      this.metrics.brokerConnected.set(0);
    }
    await session.close();
  }

  /**
   * Events a producer spooled on this host while the broker was down are published now
   * that it answers (in the background: consuming does not wait for it). One replay at a
   * time: a reconnect during a replay asks for one more pass after it, not a second replay.
   */
  private requestSpoolReplay(): void {
    if (this.replaying) {
      this.replayAgain = true;
      return;
    }
    this.replaying = (async () => {
      do {
        this.replayAgain = false;
        await this.replaySpooled();
      } while (this.replayAgain && !this.stopping);
    })().finally(() => (this.replaying = undefined));
  }

  private async replaySpooled(): Promise<void> {
    try {
      if (!(await spoolNeedsReplay(this.config.spool.folder))) return;
      const publisher = await openPublisher(this.config.rabbitmq);
      try {
        const result = await replaySpool(this.config, publisher, this.log);
        this.log.info(result, 'spooled events replayed');
      } finally {
        await publisher.close();
      }
    } catch (err) {
      this.metrics.errors.inc({ kind: 'spool-replay' });
      this.log.warn({ err: (err as Error).message, folder: this.config.spool.folder }, 'could not replay the spool; it is kept for the next connect');
    }
  }

  private onSessionClosed(session: ConsumerSession): void {
    if (this.session !== session) return;
    this.session = undefined;
    this.consumerTag = undefined;
    this.metrics.brokerConnected.set(0);
    // While the connect loop runs, a session that closes is one it is setting up: it retries.
    if (this.stopping || this.connectLoopRunning) return;
    this.metrics.errors.inc({ kind: 'broker-connection' });
    // Unacked messages of the lost channel go back to the queue; their in-flight starts
    // finish, and the redelivery is absorbed by the workflow id.
    this.log.warn({ inFlight: this.inFlight.size }, 'RabbitMQ connection lost; reconnecting');
    this.reconnect();
  }

  private async startConsuming(): Promise<void> {
    const session = this.session;
    if (!session || this.consumerTag || this.paused || this.stopping) return;
    const { consumerTag } = await session.channel.consume(this.config.rabbitmq.queue, (msg) => this.onDelivery(session, msg), { noAck: false });
    if (this.session !== session) return;
    this.consumerTag = consumerTag;
    this.metrics.brokerConnected.set(1);
    this.log.info({ queue: this.config.rabbitmq.queue, consumerTag }, 'consuming');
  }

  private async cancelConsumer(): Promise<void> {
    const session = this.session;
    const tag = this.consumerTag;
    this.consumerTag = undefined;
    if (!session || !tag) return;
    await session.channel.cancel(tag).catch(() => undefined);
  }

  private onDelivery(session: ConsumerSession, msg: Message | null): void {
    if (msg === null) {
      // The broker cancelled us (queue deleted): reconnecting declares the queue again.
      this.log.warn('the broker cancelled the consumer; reconnecting');
      void session.close();
      return;
    }
    this.metrics.consumed.inc();
    const task = this.sleepMillis > 0 ? (this.paced = this.paced.then(() => this.handle(session, msg)).then(() => this.sleep(this.sleepMillis))) : this.handle(session, msg);
    this.inFlight.add(task);
    void task.finally(() => this.inFlight.delete(task));
  }

  private settle(session: ConsumerSession, msg: Message, how: 'ack' | 'requeue'): void {
    // A message of a lost channel cannot be settled: the broker has requeued it already.
    if (this.session !== session) return;
    try {
      if (how === 'ack') session.channel.ack(msg);
      else session.channel.nack(msg, false, true);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'could not settle a message on a closing channel');
    }
  }

  // --- one message ------------------------------------------------------------------------

  private async handle(session: ConsumerSession, msg: Message): Promise<void> {
    if (this.paused || this.stopping) {
      this.settle(session, msg, 'requeue');
      return;
    }
    let decision: MessageDecision;
    try {
      decision = await decideMessage(
        { client: this.client, config: this.config, options: this.registration, startTimeoutMs: this.startTimeoutMs },
        msg.content,
      );
    } catch (err) {
      decision = { kind: 'unavailable', detail: (err as Error).message };
    }
    const messageId = msg.properties.messageId as string | undefined;
    switch (decision.kind) {
      case 'start': {
        const { outcome, workflowId } = decision.result;
        this.unavailableStreak = 0;
        if (outcome === 'delivered') this.metrics.delivered.inc();
        else this.metrics.ignored.inc();
        this.settle(session, msg, 'ack');
        this.log.debug({ outcome, workflowId, messageId, redelivered: msg.fields.redelivered }, `message ${outcome}`);
        return;
      }
      case 'invalid': {
        try {
          await publishDeadLetter(session.channel, this.config.rabbitmq, msg, decision.cause);
        } catch (err) {
          this.metrics.errors.inc({ kind: 'dead-letter-publish' });
          this.log.error({ err: (err as Error).message, messageId }, 'could not dead-letter an invalid message; it stays on the queue');
          if (this.session === session) {
            // Not at once: a broker that refuses the publish must not turn this into a hot loop.
            await this.sleep(1000);
            this.settle(session, msg, 'requeue');
          }
          return;
        }
        this.metrics.deadLettered.inc({ reason: decision.cause.reason });
        this.settle(session, msg, 'ack');
        this.log.warn(
          { reason: decision.cause.reason, key: decision.cause.key, detail: decision.cause.detail, messageId },
          'invalid message moved to the dead-letter queue',
        );
        return;
      }
      case 'unavailable': {
        this.metrics.errors.inc({ kind: 'temporal-unavailable' });
        // Cancel before requeueing, so the broker does not hand the message straight back.
        await this.pause('unavailable', decision.detail);
        this.settle(session, msg, 'requeue');
        return;
      }
      case 'misconfigured': {
        // Not this message's fault, and no other message would fare better: stop consuming
        // rather than dead-letter the whole queue.
        this.metrics.errors.inc({ kind: 'temporal-misconfigured' });
        await this.pause('misconfigured', decision.detail);
        this.settle(session, msg, 'requeue');
        return;
      }
    }
  }

  // --- Temporal outages --------------------------------------------------------------------

  private async pause(kind: 'unavailable' | 'misconfigured', detail: string): Promise<void> {
    if (this.paused) return;
    this.paused = true;
    this.pauseKind = kind;
    if (kind === 'unavailable') {
      this.unavailableStreak++;
      this.metrics.paused.set(1);
      this.log.warn({ detail }, 'Temporal is unavailable: paused consuming; in-flight messages go back to the queue');
    } else {
      this.metrics.temporalMisconfigured.set(1);
      this.log.error({ detail }, `stopped consuming: ${detail}. The messages stay on the queue`);
    }
    await this.cancelConsumer();
    void this.probeUntilAvailable();
  }

  /** Is Temporal ready for starts again: answering, and (after a misconfiguration) with every search attribute registered? */
  private async readyAgain(): Promise<{ ready: boolean; still?: string }> {
    if (this.pauseKind === 'unavailable') return { ready: await temporalAnswers(this.client, 5000) };
    try {
      const missing = await missingSearchAttributes(this.client, this.config.temporal.namespace, 5000);
      return missing.length === 0 ? { ready: true } : { ready: false, still: `still missing: ${missing.join(', ')}` };
    } catch (err) {
      return { ready: false, still: `cannot list the search attributes: ${(err as Error).message}` };
    }
  }

  private async probeUntilAvailable(): Promise<void> {
    const since = Date.now();
    const first = this.pauseKind === 'unavailable' ? this.unavailableStreak - 1 : 0;
    for (let attempt = first; this.paused && !this.stopping; attempt++) {
      await this.sleep(backoffMs(attempt + 1, this.maxBackoffMs));
      if (this.stopping) return;
      const { ready, still } = await this.readyAgain();
      if (ready) {
        const kind = this.pauseKind;
        this.paused = false;
        this.metrics.paused.set(0);
        this.metrics.temporalMisconfigured.set(0);
        this.log.info(
          { pausedForMs: Date.now() - since },
          kind === 'unavailable' ? 'Temporal answers again: resumed consuming' : 'the search attributes are registered now: resumed consuming',
        );
        await this.startConsuming().catch((err: Error) => {
          this.log.warn({ err: err.message }, 'could not resume consuming; reconnecting');
          void this.session?.close();
        });
        return;
      }
      if (this.pauseKind === 'unavailable') this.log.info({ pausedForMs: Date.now() - since }, 'Temporal still unavailable');
      else this.log.error({ pausedForMs: Date.now() - since, detail: still }, 'still not consuming: the Temporal namespace lacks search attributes');
    }
  }

  /** A sleep that stop() cuts short. */
  private sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }
}
