import type { GetMessage } from 'amqplib';
import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { WorkflowFailedError } from '@temporalio/client';
import { bridgeConnectionName, openBroker, type BrokerSession } from '../../bridge/broker.js';
import { startBridge } from '../../bridge/consumer.js';
import { decideMessage, settleMessage, type MessageDecision } from '../../bridge/messages.js';
import { registrationSite } from '../../clouds/index.js';
import type { Config } from '../../core/config.js';
import { BrokerError } from '../../core/errors.js';
import { handlerFromName } from '../../core/handlers.js';
import { connectTemporal, workflowUiLink } from '../../core/temporal-client.js';
import type { RegistrationOptions } from '../../core/workflow-contract.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';
import { untilSignal } from '../signals.js';

/** One-shot connects are bounded: a hook or cron job must fail, not hang (the original retried forever). */
const ONE_SHOT_CONNECT_ATTEMPTS = 3;

type StartDecision = Extract<MessageDecision, { kind: 'start' }>;

const nonNegative = t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(0)]);
const positive = t.cascade(t.isNumber(), [t.isInteger(), t.isAtLeast(1)]);

export class DequeueCommand extends ConfiguredCommand {
  static override paths = [['dequeue']];
  static override usage = Command.Usage({
    description: 'Take queued image events and start one workflow for each',
    details: `
      Without --server: takes one message (basic.get), starts its workflow and acks it. An empty queue exits 0. With --wait the
      message is acked only when the workflow succeeds; when it fails, the message goes back to the queue and the exit code is 1.

      With --server: the bridge. A push consumer that starts a workflow per message and acks after the start; duplicates and
      redeliveries are absorbed by the workflow id; a message that is not a valid event goes to the dead-letter queue
      (<queue>.dead) with the reason in the x-snf-vmcatcher-reason header. It reconnects to RabbitMQ on its own, pauses while
      Temporal is unreachable, and stops cleanly on SIGTERM or SIGINT. See docs/bridge.md.
    `,
    examples: [
      ['Run the bridge', '$0 dequeue --server --conf /etc/snf-vmcatcher/application.conf'],
      ['The original command line', '$0 dequeue -server -conf /etc/snf-vmcatcher/application.conf -kamaki-cloud grnet'],
      ['Take one message and wait for its registration', '$0 dequeue --conf application.conf --wait'],
    ],
  });

  server = Option.Boolean('--server', false, {
    description: 'Run as a service: consume until SIGTERM/SIGINT (the original -server)',
  });
  handler = Option.String('--handler', {
    description:
      'What the workflow does: registerImage (default), JustLogHandler, ThrowingHandler, or the original class names',
  });
  kamakiCloud = Option.String('--kamaki-cloud', {
    description: 'kamaki cloud name (from ~/.kamakirc) for the registrations',
  });
  insecureSsl = Option.Boolean('--insecure-ssl', false, {
    description: 'Do not verify TLS for the image downloads (debugging aid; logged)',
  });
  sleepMillis = Option.String('--sleep-millis', {
    validator: nonNegative,
    description: 'Pause between messages in server mode, in ms (not capped, unlike the original)',
  });
  prefetch = Option.String('--prefetch', {
    validator: positive,
    description: 'Unacked messages in flight in server mode (default rabbitmq.prefetch)',
  });
  metricsPort = Option.String('--metrics-port', {
    validator: nonNegative,
    description: 'Serve Prometheus metrics on this port (0 = off)',
  });
  wait = Option.Boolean('--wait', false, {
    description: 'One-shot: wait for the workflow and exit non-zero when it fails',
  });

  registrationOptions(): RegistrationOptions {
    const options: RegistrationOptions = {};
    if (this.handler !== undefined) options.handler = handlerFromName(this.handler);
    if (this.kamakiCloud !== undefined) options.cloud = this.kamakiCloud;
    if (this.insecureSsl) options.insecureSsl = true;
    return options;
  }

  async run(): Promise<number> {
    const registration = this.registrationOptions();
    const config = await this.config();
    return this.server ? this.runServer(config, registration) : this.runOnce(config, registration);
  }

  private async runServer(config: Config, registration: RegistrationOptions): Promise<number> {
    const bridge = await startBridge({
      config,
      logger: this.log,
      options: { registration, prefetch: this.prefetch, sleepMillis: this.sleepMillis, metricsPort: this.metricsPort },
    });
    await untilSignal(bridge.done, () => bridge.stop(), this.log);
    return EXIT.ok;
  }

  private async connectOnce(config: Config): Promise<BrokerSession> {
    const pause = this.sleepMillis ?? 1000;
    let last: unknown;
    for (let attempt = 1; attempt <= ONE_SHOT_CONNECT_ATTEMPTS; attempt++) {
      try {
        return await openBroker(config.rabbitmq, { connectionName: bridgeConnectionName('dequeue') });
      } catch (err) {
        last = err;
        this.log.warn({ attempt, err: (err as Error).message }, 'cannot connect to RabbitMQ');
        if (attempt < ONE_SHOT_CONNECT_ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
    throw new BrokerError(`${(last as Error).message} (gave up after ${ONE_SHOT_CONNECT_ATTEMPTS} attempts)`);
  }

  private async runOnce(config: Config, registration: RegistrationOptions): Promise<number> {
    const temporal = await connectTemporal(config.temporal);
    let session: BrokerSession | undefined;
    try {
      session = await this.connectOnce(config);
      const msg = await session.channel.get(config.rabbitmq.queue, { noAck: false });
      if (msg === false) {
        this.out(`Queue '${config.rabbitmq.queue}' is empty: no message to dequeue`);
        return EXIT.ok;
      }
      const decision = await decideMessage(
        {
          client: temporal.client,
          config,
          options: registration,
          site: registrationSite(config),
          startTimeoutMs: 30_000,
        },
        msg.content,
      );
      if (decision.kind === 'start' && decision.result.outcome === 'delivered' && decision.result.handle && this.wait) {
        return await this.waitThenSettle(config, session, msg, decision);
      }
      const settled = await settleMessage(session.channel, config.rabbitmq, msg, decision);
      switch (decision.kind) {
        case 'invalid':
          if (settled.how === 'dead-letter-failed') {
            return this.fail(
              `the message is not a valid event (${decision.cause.reason}: ${decision.cause.detail}) and could not be dead-lettered (${settled.error.message}); it stays on the queue`,
            );
          }
          return this.fail(
            `the message is not a valid event (${decision.cause.reason}: ${decision.cause.detail}); moved to the dead-letter queue`,
          );
        case 'misconfigured':
          return this.fail(`${decision.detail}; the message is back on the queue`, EXIT.usage);
        case 'unavailable':
          return this.fail(`Temporal is unavailable (${decision.detail}); the message is back on the queue`);
      }
      this.reportStarted(config, decision);
      return EXIT.ok;
    } finally {
      await session?.close();
      await temporal.connection.close().catch(() => undefined);
    }
  }

  private reportStarted(config: Config, decision: StartDecision): void {
    const { outcome, workflowId, childWorkflowType } = decision.result;
    if (outcome === 'ignored') this.out(`Ignored ${decision.event.type ?? 'an'} event: it needs no action`);
    else
      this.out(
        `Delivered the event to workflow ${workflowId}, which runs ${childWorkflowType} (${workflowUiLink(config.temporal, workflowId!)})`,
      );
  }

  /** --wait: the message stays unacked until the workflow ends; a failed workflow puts it back, as the original did with a throwing handler. */
  private async waitThenSettle(
    config: Config,
    session: BrokerSession,
    msg: GetMessage,
    decision: StartDecision,
  ): Promise<number> {
    this.reportStarted(config, decision);
    const { result } = decision;
    try {
      await result.handle!.result();
    } catch (err) {
      session.channel.nack(msg, false, true);
      const cause = err instanceof WorkflowFailedError ? (err.cause?.message ?? err.message) : (err as Error).message;
      return this.fail(`workflow ${result.workflowId} failed: ${cause}; the message is back on the queue`);
    }
    session.channel.ack(msg);
    this.out(`Workflow ${result.workflowId} completed`);
    return EXIT.ok;
  }
}
