/**
 * The sizes of the payloads a workflow's history holds: every Payload (inputs, results, heartbeat
 * details, signals, memos, search attributes, failure details) and every Payloads set (the unit
 * the Temporal server checks against its blob size limit), as the server stores them (protobuf).
 */
import type { Client } from '@temporalio/client';
import proto from '@temporalio/proto';

export interface PayloadSize {
  workflowId: string;
  runId: string;
  /** The history event's id and type, and where in it the payload is. */
  where: string;
  bytes: number;
}

// A CommonJS module: its namespace is its default export under Node's ESM loader (tsx, jest).
const { Payload, Payloads } = proto.temporal.api.common.v1;

function isPayload(value: unknown): value is proto.temporal.api.common.v1.IPayload {
  return (
    typeof value === 'object' &&
    value !== null &&
    'data' in value &&
    (value as { data?: unknown }).data instanceof Uint8Array
  );
}

/** Every payload and payload set in `value`, with its path. */
function walk(value: unknown, where: string, out: Array<{ where: string; bytes: number }>): void {
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return;
  if (isPayload(value)) {
    out.push({ where, bytes: Payload.encode(value).finish().length });
    return;
  }
  const payloads = (value as { payloads?: unknown }).payloads;
  if (Array.isArray(payloads) && payloads.every(isPayload))
    out.push({ where: `${where} (set)`, bytes: Payloads.encode({ payloads }).finish().length });
  for (const [key, child] of Object.entries(value)) walk(child, where ? `${where}.${key}` : key, out);
}

/** The sizes of every payload in one run's history. */
export async function historyPayloadSizes(client: Client, workflowId: string, runId?: string): Promise<PayloadSize[]> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const found: PayloadSize[] = [];
  for (const event of history.events ?? []) {
    const sizes: Array<{ where: string; bytes: number }> = [];
    walk(event, '', sizes);
    for (const s of sizes)
      found.push({
        workflowId,
        runId: runId ?? '',
        where: `event ${String(event.eventId)} ${s.where}`,
        bytes: s.bytes,
      });
  }
  return found;
}

/** Every run matching a visibility query: its id and run id. */
export async function runsMatching(
  client: Client,
  query: string,
): Promise<Array<{ workflowId: string; runId: string }>> {
  const runs: Array<{ workflowId: string; runId: string }> = [];
  for await (const run of client.workflow.list({ query })) runs.push({ workflowId: run.workflowId, runId: run.runId });
  return runs;
}
