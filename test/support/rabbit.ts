import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';

export const RABBIT_URL = 'amqp://guest:guest@127.0.0.1:5672/%2F';

/** Unique queue, exchange and routing key names, so test files never share broker state. */
export function uniqueTopology(prefix = 'test') {
  const id = `${prefix}-${randomBytes(4).toString('hex')}`;
  return { queue: `${id}.q`, exchange: `${id}.x`, routingKey: `${id}.rk`, deadLetterQueue: `${id}.q.dead` };
}

/** Writes an original-style application.conf (HOCON) for a topology, plus extra HOCON sections. */
export async function writeConf(
  topology: ReturnType<typeof uniqueTopology>,
  extra = '',
  servers = ['127.0.0.1:5672'],
): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-conf-'));
  const file = path.join(dir, 'application.conf');
  await writeFile(
    file,
    `rabbitmq {
  servers = [${servers.map((s) => `"${s}"`).join(', ')}]
  username = "guest"
  password = "guest"
  queue = "${topology.queue}"
  exchange = "${topology.exchange}"
  routingKey = "${topology.routingKey}"
  vhost = "/"
}
${extra}
`,
  );
  return file;
}

/** Gets every message currently on a queue (acking them), for assertions. */
export async function takeAll(queue: string): Promise<amqp.GetMessage[]> {
  const conn = await amqp.connect(RABBIT_URL);
  try {
    const ch = await conn.createChannel();
    const messages: amqp.GetMessage[] = [];
    for (;;) {
      const msg = await ch.get(queue, { noAck: true });
      if (!msg) break;
      messages.push(msg);
    }
    return messages;
  } finally {
    await conn.close();
  }
}

export async function deleteTopology(topology: ReturnType<typeof uniqueTopology>): Promise<void> {
  const conn = await amqp.connect(RABBIT_URL);
  try {
    const ch = await conn.createChannel();
    await ch.deleteQueue(topology.queue).catch(() => undefined);
    await ch.deleteQueue(topology.deadLetterQueue).catch(() => undefined);
    await ch.deleteExchange(topology.exchange).catch(() => undefined);
  } finally {
    await conn.close().catch(() => undefined);
  }
}
