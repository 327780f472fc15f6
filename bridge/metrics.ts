import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';

/**
 * The bridge's Prometheus metrics. Each bridge gets its own registry, so a process that
 * runs worker and bridge together (or a test that starts several bridges) never mixes them.
 */
export interface BridgeMetrics {
  registry: Registry;
  consumed: Counter;
  delivered: Counter;
  ignored: Counter;
  deadLettered: Counter<'reason'>;
  errors: Counter<'kind'>;
  /** 1 while consumption is paused because Temporal does not answer. */
  paused: Gauge;
  /** 1 while consumption is stopped because the Temporal namespace lacks the search attributes. */
  temporalMisconfigured: Gauge;
  /** 1 while a broker connection with an active consumer is open. */
  brokerConnected: Gauge;
  /** Messages in the dead-letter queue, read when Prometheus scrapes (the bridge sets the reader once it has a broker). */
  deadLetters: Gauge;
  readDeadLetters?: () => Promise<number | undefined>;
}

const PREFIX = 'snf_vmcatcher_bridge_';

export function createBridgeMetrics(): BridgeMetrics {
  const registry = new Registry();
  const registers = [registry];
  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name: `${PREFIX}${name}`, help, labelNames, registers });
  const gauge = (name: string, help: string) => new Gauge({ name: `${PREFIX}${name}`, help, registers });
  // The dead-letter gauge reads through `metrics.readDeadLetters` at scrape time.
  const metrics: BridgeMetrics = {
    registry,
    consumed: counter('messages_consumed_total', 'Messages received from the queue'),
    delivered: counter(
      'events_delivered_total',
      "Events delivered to their image revision's workflow (started for them, or already running)",
    ),
    ignored: counter('ignored_total', 'Events that need no action (e.g. ProcessPrefix)'),
    deadLettered: counter('dead_lettered_total', 'Messages moved to the dead-letter queue, by reason', ['reason']),
    errors: counter(
      'errors_total',
      'Errors, by kind (temporal-unavailable, temporal-misconfigured, broker-connection, dead-letter-publish, spool-replay)',
      ['kind'],
    ),
    paused: gauge('paused', '1 while consumption is paused because Temporal is unavailable'),
    temporalMisconfigured: gauge(
      'temporal_misconfigured',
      '1 while consumption is stopped because the Temporal namespace lacks the search attributes',
    ),
    brokerConnected: gauge('broker_connected', '1 while consuming from RabbitMQ'),
    deadLetters: new Gauge({
      name: `${PREFIX}dead_letter_messages`,
      help: 'Messages in the dead-letter queue (<queue>.dead), as last read from RabbitMQ',
      registers,
      async collect() {
        // Without a broker connection (or when the check fails) the last count read stands.
        const count = await metrics.readDeadLetters?.().catch(() => undefined);
        if (count !== undefined) this.set(count);
      },
    }),
  };
  return metrics;
}

/** Serves `GET /metrics` on `port` (all interfaces). Resolves once listening. */
export async function serveMetrics(
  registry: Registry,
  port: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        })
        .catch((err: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`${err.message}\n`);
        });
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: the metrics are at /metrics\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
