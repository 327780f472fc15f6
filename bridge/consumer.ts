/**
 * The bridge: a push consumer on the main queue that turns every message into exactly one
 * workflow start (the workflow id absorbs redeliveries and duplicates), acks only after
 * the start, dead-letters what is not a valid event, reconnects to RabbitMQ on its own, and
 * pauses while Temporal does not answer.
 *
 * Its parts: the broker connection and consumer (reconnect.ts), the Temporal readiness gate
 * (temporal-gate.ts), what one message becomes (messages.ts), the metrics (metrics.ts); this
 * file runs messages through them and owns start and shutdown.
 */
import type { Message } from 'amqplib';
import { Client, Connection } from '@temporalio/client';
import { registrationSite } from '../clouds/index.js';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { temporalConnectionOptions } from '../core/temporal-client.js';
import type { RegistrationOptions } from '../core/workflow-contract.js';
import { Sleeps } from './backoff.js';
import { bridgeConnectionName, type BrokerSession } from './broker.js';
import { decideMessage, settleMessage, type MessageDecision, type Settled } from './messages.js';
import { createBridgeMetrics, serveMetrics, type BridgeMetrics } from './metrics.js';
import { openPublisher } from './publisher.js';
import { ReconnectingConsumer } from './reconnect.js';
import { replaySpool, spoolFolderProblem, spoolNeedsReplay } from './spool.js';
import { TemporalGate } from './temporal-gate.js';

interface BridgeOptions {
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

interface BridgeDeps {
  config: Config;
  logger: Logger;
  /** A Temporal client to share (e.g. with the worker); the bridge opens its own when absent. */
  client?: Client;
  options?: BridgeOptions;
}

interface RunningBridge {
  /** Stops consuming, lets in-flight starts finish and ack, closes. Idempotent. */
  stop(): Promise<void>;
  /** Resolves once the bridge has stopped. */
  done: Promise<void>;
  metrics: BridgeMetrics;
  /** The port /metrics listens on, when served. */
  metricsPort?: number;
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

/**
 * Events a producer spooled on this host while the broker was down are published once it
 * answers again (in the background: consuming does not wait for it). One replay at a time: a
 * reconnect during a replay asks for one more pass after it, not a second replay.
 */
class SpoolReplays {
  private replaying?: Promise<void>;
  private again = false;

  constructor(private readonly deps: { config: Config; log: Logger; metrics: BridgeMetrics; sleeps: Sleeps }) {}

  request(): void {
    if (this.replaying) {
      this.again = true;
      return;
    }
    this.replaying = (async () => {
      do {
        this.again = false;
        await this.replayOnce();
      } while (this.again && !this.deps.sleeps.stopped);
    })().finally(() => (this.replaying = undefined));
  }

  /** Resolves when no replay runs (for shutdown). */
  async settled(): Promise<void> {
    await this.replaying?.catch(() => undefined);
  }

  private async replayOnce(): Promise<void> {
    const { config, log, metrics } = this.deps;
    try {
      if (!(await spoolNeedsReplay(config.spool.folder))) return;
      const publisher = await openPublisher(config.rabbitmq);
      try {
        const result = await replaySpool(config, publisher, log);
        log.info(result, 'spooled events replayed');
      } finally {
        await publisher.close();
      }
    } catch (err) {
      metrics.errors.inc({ kind: 'spool-replay' });
      log.warn(
        { err: (err as Error).message, folder: config.spool.folder },
        'could not replay the spool; it is kept for the next connect',
      );
    }
  }
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
  private readonly sleepMillis: number;
  private readonly metricsPortOption: number;
  private readonly startTimeoutMs: number;
  private readonly sleeps = new Sleeps();
  private readonly broker: ReconnectingConsumer;
  private readonly temporal: TemporalGate;
  private readonly inFlight = new Set<Promise<void>>();
  /** Serialises messages when pacing (sleepMillis > 0). */
  private paced: Promise<void> = Promise.resolve();
  private metricsServer?: { port: number; close(): Promise<void> };
  private markDone!: () => void;
  private readonly spool: SpoolReplays;

  constructor(deps: BridgeDeps) {
    const opts = deps.options ?? {};
    this.config = deps.config;
    this.log = deps.logger;
    if (deps.client) {
      this.client = deps.client;
    } else {
      // Lazy: a Temporal server that is down at start is handled like any later outage (pause, probe, resume).
      this.ownConnection = Connection.lazy(temporalConnectionOptions(deps.config.temporal));
      this.client = new Client({ connection: this.ownConnection, namespace: deps.config.temporal.namespace });
    }
    this.registration = opts.registration ?? {};
    this.sleepMillis = opts.sleepMillis ?? deps.config.bridge.sleepMillis;
    this.metricsPortOption = opts.metricsPort ?? deps.config.bridge.metricsPort;
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    const maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    const shared = { log: this.log, metrics: this.metrics, sleeps: this.sleeps, maxBackoffMs };
    this.broker = new ReconnectingConsumer({
      ...shared,
      rabbit: deps.config.rabbitmq,
      connectionName: opts.connectionName ?? bridgeConnectionName(),
      prefetch: opts.prefetch ?? deps.config.rabbitmq.prefetch,
      mayConsume: () => !this.temporal.paused,
      onMessage: (session, msg) => this.onMessage(session, msg),
      onConnected: () => this.spool.request(),
      inFlight: () => this.inFlight.size,
    });
    this.temporal = new TemporalGate({
      ...shared,
      client: this.client,
      namespace: deps.config.temporal.namespace,
      stopConsuming: () => this.broker.cancelConsumer(),
      resumeConsuming: () =>
        this.broker.startConsuming().catch((err: Error) => {
          this.log.warn({ err: err.message }, 'could not resume consuming; reconnecting');
          this.broker.restart();
        }),
    });
    this.spool = new SpoolReplays({ config: deps.config, log: this.log, metrics: this.metrics, sleeps: this.sleeps });
    this.metrics.readDeadLetters = () => this.broker.deadLetterDepth();
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
        prefetch: this.broker.prefetch,
        sleepMillis: this.sleepMillis,
        connectionName: this.broker.connectionName,
        temporal: this.config.temporal.address,
        taskQueue: this.config.temporal.taskQueue,
        registration: this.registration,
      },
      'bridge starting',
    );
    if (this.registration.insecureSsl)
      this.log.warn('insecure TLS is ON for the image downloads of every event this bridge starts');
    const problem = await spoolFolderProblem(this.config.spool.folder).catch(() => undefined);
    if (problem)
      this.log.warn(
        { folder: this.config.spool.folder },
        `the bridge may not be able to replay spooled events: ${problem} See docs/image-lists.md`,
      );
    this.broker.connect();
  }

  async stop(): Promise<void> {
    if (this.sleeps.stopped) return this.done;
    this.sleeps.stop();
    this.log.info({ inFlight: this.inFlight.size }, 'bridge stopping: no new messages, finishing in-flight starts');
    await this.broker.stopConsuming();
    await this.spool.settled();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    await this.broker.close();
    await this.metricsServer?.close();
    await this.ownConnection?.close().catch(() => undefined);
    this.log.info('bridge stopped');
    this.markDone();
  }

  // --- one message ------------------------------------------------------------------------

  private onMessage(session: BrokerSession, msg: Message): void {
    this.metrics.consumed.inc();
    const task =
      this.sleepMillis > 0
        ? (this.paced = this.paced
            .then(() => this.handle(session, msg))
            .then(() => this.sleeps.sleep(this.sleepMillis)))
        : this.handle(session, msg);
    this.inFlight.add(task);
    void task.finally(() => this.inFlight.delete(task));
  }

  private async handle(session: BrokerSession, msg: Message): Promise<void> {
    if (this.temporal.paused || this.sleeps.stopped) {
      this.requeue(session, msg);
      return;
    }
    let decision: MessageDecision;
    try {
      decision = await decideMessage(
        {
          client: this.client,
          config: this.config,
          options: this.registration,
          site: registrationSite(this.config),
          startTimeoutMs: this.startTimeoutMs,
        },
        msg.content,
      );
    } catch (err) {
      decision = { kind: 'unavailable', detail: (err as Error).message };
    }
    if (decision.kind === 'start') this.temporal.started();
    if (decision.kind === 'unavailable' || decision.kind === 'misconfigured') {
      // Not this message's fault, and no other message would fare better: stop consuming (before
      // the message goes back, so the broker does not hand it straight back) rather than
      // dead-letter the whole queue.
      this.metrics.errors.inc({ kind: `temporal-${decision.kind}` });
      await this.temporal.pause(decision.kind, decision.detail);
    }
    await this.record(session, msg, decision, await this.settle(session, msg, decision));
  }

  /** Settles on the message's own channel; a message of a lost channel is back on the queue already. */
  private async settle(session: BrokerSession, msg: Message, decision: MessageDecision): Promise<Settled | undefined> {
    if (!this.broker.isCurrent(session)) return undefined;
    try {
      return await settleMessage(session.channel, this.config.rabbitmq, msg, decision);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'could not settle a message on a closing channel');
      return undefined;
    }
  }

  private requeue(session: BrokerSession, msg: Message): void {
    if (!this.broker.isCurrent(session)) return;
    try {
      session.channel.nack(msg, false, true);
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'could not settle a message on a closing channel');
    }
  }

  /** Metrics and the log line of a handled message (`settled` is undefined when its channel was lost). */
  private async record(
    session: BrokerSession,
    msg: Message,
    decision: MessageDecision,
    settled: Settled | undefined,
  ): Promise<void> {
    const messageId = msg.properties.messageId as string | undefined;
    if (decision.kind === 'start') {
      const { outcome, workflowId } = decision.result;
      if (outcome === 'delivered') this.metrics.delivered.inc();
      else this.metrics.ignored.inc();
      this.log.debug({ outcome, workflowId, messageId, redelivered: msg.fields.redelivered }, `message ${outcome}`);
    } else if (settled?.how === 'dead-lettered') {
      const { reason, key, detail } = settled.cause;
      this.metrics.deadLettered.inc({ reason });
      this.log.warn({ reason, key, detail, messageId }, 'invalid message moved to the dead-letter queue');
    } else if (settled?.how === 'dead-letter-failed') {
      this.metrics.errors.inc({ kind: 'dead-letter-publish' });
      this.log.error(
        { err: settled.error.message, messageId },
        'could not dead-letter an invalid message; it stays on the queue',
      );
      // Not at once: a broker that refuses the publish must not turn this into a hot loop.
      await this.sleeps.sleep(1000);
      this.requeue(session, msg);
    }
  }
}
