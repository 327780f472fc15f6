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
}

const PREFIX = 'snf_vmcatcher_bridge_';

export function createBridgeMetrics(): BridgeMetrics {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    consumed: new Counter({ name: `${PREFIX}messages_consumed_total`, help: 'Messages received from the queue', registers }),
    delivered: new Counter({
      name: `${PREFIX}events_delivered_total`,
      help: "Events delivered to their image revision's workflow (started for them, or already running)",
      registers,
    }),
    ignored: new Counter({ name: `${PREFIX}ignored_total`, help: 'Events that need no action (e.g. ProcessPrefix)', registers }),
    deadLettered: new Counter({
      name: `${PREFIX}dead_lettered_total`,
      help: 'Messages moved to the dead-letter queue, by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    errors: new Counter({
      name: `${PREFIX}errors_total`,
      help: 'Errors, by kind (temporal-unavailable, temporal-misconfigured, broker-connection, dead-letter-publish, spool-replay)',
      labelNames: ['kind'] as const,
      registers,
    }),
    paused: new Gauge({ name: `${PREFIX}paused`, help: '1 while consumption is paused because Temporal is unavailable', registers }),
    temporalMisconfigured: new Gauge({
      name: `${PREFIX}temporal_misconfigured`,
      help: '1 while consumption is stopped because the Temporal namespace lacks the search attributes',
      registers,
    }),
    brokerConnected: new Gauge({ name: `${PREFIX}broker_connected`, help: '1 while consuming from RabbitMQ', registers }),
  };
}

/** Serves `GET /metrics` on `port` (all interfaces). Resolves once listening. */
export async function serveMetrics(registry: Registry, port: number): Promise<{ port: number; close(): Promise<void> }> {
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
