/** Helpers for the bridge's integration tests: publish, run the real CLI bridge, count workflows. */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { execa, type ResultPromise } from 'execa';
import amqp from 'amqplib';
import { Client, Connection } from '@temporalio/client';
import { SA_IMAGE_ID } from '../../core/workflow-contract.js';
import { BIN, ROOT } from './cli.js';
import { RABBIT_URL } from './rabbit.js';

export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** A flat register message (the original format) for image `n` of list `listId`. */
export function registerBody(listId: string, n: number): string {
  return JSON.stringify({
    VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
    VMCATCHER_EVENT_DC_IDENTIFIER: `image-${n}`,
    VMCATCHER_EVENT_DC_TITLE: `Image ${n}`,
    VMCATCHER_EVENT_HV_URI: `http://images.example.invalid/${listId}/${n}.img`,
    VMCATCHER_EVENT_HV_VERSION: '1.0',
    VMCATCHER_EVENT_VO: 'test.vo',
  });
}

/** Publishes bodies to the exchange with the routing key, persistent, confirmed. */
export async function publishBodies(
  topology: { exchange: string; routingKey: string; queue: string },
  bodies: string[],
): Promise<void> {
  const conn = await amqp.connect(RABBIT_URL);
  try {
    const ch = await conn.createConfirmChannel();
    // The bridge declares the topology too; declaring here lets us publish before it starts.
    await ch.assertExchange(topology.exchange, 'topic', { durable: true });
    await ch.assertQueue(topology.queue, { durable: true });
    await ch.bindQueue(topology.queue, topology.exchange, topology.routingKey);
    for (const [i, body] of bodies.entries()) {
      ch.publish(topology.exchange, topology.routingKey, Buffer.from(body), {
        persistent: true,
        contentType: 'application/json',
        messageId: `m-${i}`,
      });
    }
    await ch.waitForConfirms();
  } finally {
    await conn.close();
  }
}

export async function queueDepth(queue: string): Promise<number> {
  const conn = await amqp.connect(RABBIT_URL);
  try {
    const ch = await conn.createChannel();
    return (await ch.checkQueue(queue)).messageCount;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

export async function temporalClient(
  address = process.env.TEMPORAL_ADDRESS!,
): Promise<{ client: Client; close(): Promise<void> }> {
  const connection = await Connection.connect({ address });
  return { client: new Client({ connection }), close: () => connection.close() };
}

/** Workflow executions of one image list: workflow id → number of runs. */
export async function runsByWorkflowId(client: Client, listId: string): Promise<Map<string, number>> {
  const runs = new Map<string, number>();
  for await (const wf of client.workflow.list({ query: `ImageListIdentifier = '${listId}'` })) {
    runs.set(wf.workflowId, (runs.get(wf.workflowId) ?? 0) + 1);
  }
  return runs;
}

/** Workflow executions of one image list: image identifier → number of executions (all runs of all ids). */
export async function executionsByImage(client: Client, listId: string): Promise<Map<string, number>> {
  const runs = new Map<string, number>();
  for await (const wf of client.workflow.list({ query: `ImageListIdentifier = '${listId}'` })) {
    const image = String(wf.typedSearchAttributes.get(SA_IMAGE_ID) ?? '(none)');
    runs.set(image, (runs.get(image) ?? 0) + 1);
  }
  return runs;
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T>,
  ok: (value: T) => boolean,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (ok(last)) return last;
    } catch (err) {
      lastError = err;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(
    `timed out waiting for ${what}; last value ${JSON.stringify(last)}${lastError ? `, last error ${String(lastError)}` : ''}`,
  );
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface CliProcess {
  process: ResultPromise;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** SIGTERM, then wait for the exit code. */
  stop(): Promise<number | undefined>;
  /** The name the bridge gives its AMQP connection. */
  connectionName: string;
}

/** Runs the real CLI (`bin/snf-vmcatcher.js <args>`) as a long-running child process. */
export function spawnCli(args: string[], env: Record<string, string>, role = 'bridge'): CliProcess {
  const child = execa('node', [BIN, ...args], {
    cwd: ROOT,
    env: { SNF_VMCATCHER_LOG_LEVEL: 'info', ...env },
    extendEnv: true,
    reject: false,
    buffer: false,
    stdin: 'ignore',
  });
  let err = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString('utf8');
  });
  child.stdout?.on('data', () => undefined);
  return {
    process: child,
    stderr: () => err,
    async waitForLog(pattern, timeoutMs = 30_000) {
      await waitFor(`log ${pattern}`, async () => pattern.test(err) || child.exitCode !== null, Boolean, timeoutMs);
      if (!pattern.test(err))
        throw new Error(`process exited (${child.exitCode}) before logging ${pattern}:\n${err.slice(-3000)}`);
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const result = await child;
      return result.exitCode;
    },
    connectionName: `snf-vmcatcher-${role}@${os.hostname()}:${child.pid}`,
  };
}

/** Closes the broker connection with this client-provided name, as an operator or a network fault would. */
export async function closeConnectionNamed(name: string): Promise<void> {
  const { stdout } = await execa('rabbitmqctl', [
    '-q',
    '--no-table-headers',
    'list_connections',
    'pid',
    'client_properties',
  ]);
  const ours = stdout
    .split('\n')
    .filter((line) => line.includes(`{"connection_name","${name}"}`))
    .map((line) => line.split('\t')[0]);
  if (ours.length === 0) throw new Error(`no broker connection named ${name} in ${stdout.slice(0, 2000)}`);
  for (const pid of ours)
    await execa('rabbitmqctl', ['-q', 'close_connection', pid, 'test: cutting the bridge connection']);
}
