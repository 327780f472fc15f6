import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import amqp from 'amqplib';
import { startDevServer, stopDevServer, TEMPORAL_CLI } from '../support/temporal-server.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import {
  closeConnectionNamed,
  freePort,
  publishBodies,
  queueDepth,
  registerBody,
  runsByWorkflowId,
  spawnCli,
  temporalClient,
  uniqueId,
  waitFor,
  type CliProcess,
} from '../support/bridge.js';

async function rabbitmqctl(...args: string[]): Promise<string> {
  return (await execa('rabbitmqctl', ['-q', ...args])).stdout;
}

/** How many broker connections carry this client-provided name. */
async function connectionsNamed(name: string): Promise<number> {
  const stdout = await rabbitmqctl('--no-table-headers', 'list_connections', 'client_properties');
  return stdout.split('\n').filter((line) => line.includes(`{"connection_name","${name}"}`)).length;
}

async function consumersOn(queue: string): Promise<number> {
  const conn = await amqp.connect('amqp://guest:guest@127.0.0.1:5672/%2F');
  try {
    return (await (await conn.createChannel()).checkQueue(queue)).consumerCount;
  } finally {
    await conn.close();
  }
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^snf_vmcatcher_bridge_${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

const count = (text: string, pattern: RegExp) => (text.match(pattern) ?? []).length;

describe('the bridge when consuming fails while it reconnects', () => {
  const topology = uniqueTopology('bridge-reconnect');
  const listId = uniqueId('reconnect-list');
  const user = uniqueId('snf-bridge-test');
  const password = uniqueId('pw');
  let dir: string;
  let bridge: CliProcess | undefined;
  let temporal: Awaited<ReturnType<typeof temporalClient>>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bridge-reconnect-'));
    temporal = await temporalClient();
    await rabbitmqctl('add_user', user, password);
    await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
  });
  afterAll(async () => {
    await bridge?.stop();
    await temporal?.close();
    await rabbitmqctl('delete_user', user).catch(() => undefined);
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  test('one connect loop: afterwards one connection, one consumer, and far more than prefetch messages are consumed', async () => {
    const prefetch = 4;
    const conf = await writeConf(
      topology,
      `spool { folder = "${dir}/spool" }\nrabbitmq { username = "${user}", password = "${password}" }`,
    );
    const metricsPort = await freePort();
    bridge = spawnCli(
      ['dequeue', '--server', '--conf', conf, '--prefetch', String(prefetch), '--metrics-port', String(metricsPort)],
      {
        TEMPORAL_TASK_QUEUE: uniqueId('bridge-reconnect-tq'),
      },
    );
    await bridge.waitForLog(/"msg":"consuming"/);

    // The user may still declare and bind, but no longer read the queue: the reconnect gets
    // as far as basic.consume, which the broker refuses (ACCESS_REFUSED closes the channel).
    await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', `^${topology.exchange.replace(/\./g, '\\.')}$`);
    await closeConnectionNamed(bridge.connectionName);
    await waitFor(
      'three refused consumes',
      async () => count(bridge!.stderr(), /"msg":"cannot connect to RabbitMQ; retrying"/g),
      (n) => n >= 3,
      60_000,
    );
    expect(bridge.stderr()).toMatch(/ACCESS_REFUSED/);
    expect(await metric(metricsPort, 'broker_connected')).toBe(0);

    await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
    await waitFor(
      'consuming again',
      async () => count(bridge!.stderr(), /"msg":"consuming"/g),
      (n) => n >= 2,
      60_000,
    );

    const messages = prefetch * 10;
    await publishBodies(
      topology,
      Array.from({ length: messages }, (_, n) => registerBody(listId, n)),
    );
    await waitFor(
      'the main queue to empty',
      () => queueDepth(topology.queue),
      (n) => n === 0,
      60_000,
    );
    const runs = await waitFor(
      `${messages} workflows`,
      () => runsByWorkflowId(temporal.client, listId),
      (m) => m.size >= messages,
      60_000,
    );
    expect(runs.size).toBe(messages);

    // Exactly one loop connected: one connection under the bridge's name, one consumer, and
    // the gauge says so. (Before the fix, each refused consume started one more loop.)
    await new Promise((r) => setTimeout(r, 2000)); // a second loop would have connected by now
    expect(await connectionsNamed(bridge.connectionName)).toBe(1);
    expect(await consumersOn(topology.queue)).toBe(1);
    expect(await metric(metricsPort, 'broker_connected')).toBe(1);
    expect(count(bridge.stderr(), /"msg":"consuming"/g)).toBe(2);
    expect(await bridge.stop()).toBe(0);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
  });
});

describe('the bridge against a Temporal namespace without the search attributes', () => {
  const topology = uniqueTopology('bridge-no-sa');
  const listId = uniqueId('no-sa-list');
  let dir: string;
  let server: ResultPromise | undefined;
  let bridge: CliProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bridge-no-sa-'));
  });
  afterAll(async () => {
    await bridge?.stop();
    await stopDevServer(server);
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  test('stops consuming with an error that names them and how to register them; the messages stay on the queue; it resumes once they exist', async () => {
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    server = startDevServer(port, path.join(dir, 't.db'), { searchAttributes: false });
    const probe = await waitFor('the dev server', () => temporalClient(address), Boolean, 60_000);
    await probe.close();

    const messages = 12;
    await publishBodies(
      topology,
      Array.from({ length: messages }, (_, n) => registerBody(listId, n)),
    );
    const conf = await writeConf(topology, `spool { folder = "${dir}/spool" }`);
    const metricsPort = await freePort();
    bridge = spawnCli(
      ['dequeue', '--server', '--conf', conf, '--prefetch', '4', '--metrics-port', String(metricsPort)],
      {
        TEMPORAL_ADDRESS: address,
        TEMPORAL_TASK_QUEUE: uniqueId('bridge-no-sa-tq'),
      },
    );

    await bridge.waitForLog(/stopped consuming: the Temporal namespace 'default' lacks the search attributes/, 60_000);
    const line = bridge
      .stderr()
      .split('\n')
      .find((l) => l.includes('stopped consuming'))!;
    for (const name of ['ImageIdentifier', 'ImageListIdentifier', 'ImageVO', 'ImageStage'])
      expect(line).toContain(`${name} (Keyword)`);
    expect(line).toContain('temporal operator search-attribute create --namespace default');
    expect(await metric(metricsPort, 'temporal_misconfigured')).toBe(1);

    // Nothing dead-lettered, nothing lost: all the messages are back on the queue, and stay there.
    await waitFor(
      'every message back on the queue',
      () => queueDepth(topology.queue),
      (n) => n === messages,
      30_000,
    );
    await new Promise((r) => setTimeout(r, 3000));
    expect(await queueDepth(topology.queue)).toBe(messages);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
    expect(await consumersOn(topology.queue)).toBe(0);

    // The operator runs the command the error gives; the bridge resumes on its own.
    const command = /`temporal (operator search-attribute create [^`]+)`/.exec(line)![1].split(' ');
    const created = await execa(TEMPORAL_CLI, [...command, '--address', address], { reject: false });
    expect(created.stderr).toBe('');
    expect(created.exitCode).toBe(0);
    await bridge.waitForLog(/the search attributes are registered now: resumed consuming/, 90_000);
    await waitFor(
      'the main queue to empty',
      () => queueDepth(topology.queue),
      (n) => n === 0,
      60_000,
    );
    const temporal = await temporalClient(address);
    try {
      const runs = await waitFor(
        `${messages} workflows`,
        () => runsByWorkflowId(temporal.client, listId),
        (m) => m.size >= messages,
        60_000,
      );
      expect(runs.size).toBe(messages);
    } finally {
      await temporal.close();
    }
    expect(await metric(metricsPort, 'temporal_misconfigured')).toBe(0);
    expect(await bridge.stop()).toBe(0);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
  });
});
