import { Client, Connection } from '@temporalio/client';
import type { TemporalConfig } from './config.js';
import { TemporalUnavailableError } from './errors.js';

/**
 * The options of every Temporal connection this service opens (the CLI's and the bridge's
 * client connections, the worker's native one): address, TLS and API key, from one place.
 */
export function temporalConnectionOptions(temporal: Pick<TemporalConfig, 'address' | 'tls' | 'apiKey'>): {
  address: string;
  tls?: boolean;
  apiKey?: string;
} {
  return { address: temporal.address, tls: temporal.tls || undefined, apiKey: temporal.apiKey };
}

/** Opens a client connection to the configured Temporal frontend. The caller closes it. */
export async function connectTemporal(temporal: TemporalConfig): Promise<{ client: Client; connection: Connection }> {
  let connection: Connection;
  try {
    connection = await Connection.connect(temporalConnectionOptions(temporal));
  } catch (err) {
    throw new TemporalUnavailableError(
      `cannot reach the Temporal server at ${temporal.address} (temporal.address / TEMPORAL_ADDRESS): ${(err as Error).message}`,
      { cause: err },
    );
  }
  const client = new Client({ connection, namespace: temporal.namespace });
  return { client, connection };
}

/** A link to a workflow in the Web UI. */
export function workflowUiLink(temporal: TemporalConfig, workflowId: string, runId?: string): string {
  const base = temporal.webUiUrl.replace(/\/+$/, '');
  const path = `${base}/namespaces/${encodeURIComponent(temporal.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return runId ? `${path}/${encodeURIComponent(runId)}` : path;
}
