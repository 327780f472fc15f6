import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { runCli, SHARED } from '../support/cli.js';
import amqp from 'amqplib';
import { deleteTopology, RABBIT_URL, takeAll, uniqueTopology, writeConf } from '../support/rabbit.js';

const LISTS = path.join(SHARED, 'imagelists');
const SIGNED_URL = `file://${path.join(LISTS, 'cloudkeeper-imagelist01.signed')}`;
const SHA512 = 'a'.repeat(128);

/** The environment vmcatcher gives its hook for an AvailablePostfix event (launch.py). */
const AVAILABLE_POSTFIX: Record<string, string> = {
  VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
  VMCATCHER_EVENT_UUID_SESSION: '0f8b2f1e-a8a7-11e4-9d9e-0800270d5a6b',
  VMCATCHER_CACHE_DIR_CACHE: '/var/lib/vmcatcher/cache',
  VMCATCHER_CACHE_DIR_DOWNLOAD: '/var/lib/vmcatcher/cache/partial',
  VMCATCHER_CACHE_DIR_EXPIRE: '/var/lib/vmcatcher/cache/expired',
  VMCATCHER_EVENT_FILENAME: 'c0482bc2-bf41-5d49-aaaa-a750174a186b',
  VMCATCHER_EVENT_DC_IDENTIFIER: 'c0482bc2-bf41-5d49-aaaa-a750174a186b',
  VMCATCHER_EVENT_DC_TITLE: 'Image for CernVM [Scientific Linux/6.0/KVM]',
  VMCATCHER_EVENT_DC_DESCRIPTION: 'CernVM',
  VMCATCHER_EVENT_HV_URI: 'https://appdb.somewhere.net/images/base/CERNVM/3.3.0/CERNVM-3.3.0-40GB.ova',
  VMCATCHER_EVENT_HV_SIZE: '121243136',
  VMCATCHER_EVENT_HV_VERSION: '3.3.0-1',
  VMCATCHER_EVENT_HV_HYPERVISOR: 'KVM',
  VMCATCHER_EVENT_HV_FORMAT: 'OVA',
  VMCATCHER_EVENT_SL_ARCH: 'x86_64',
  VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA512,
  VMCATCHER_EVENT_SL_COMMENTS: 'none',
  VMCATCHER_EVENT_SL_OS: 'Linux',
  VMCATCHER_EVENT_SL_OSVERSION: '6.0',
  VMCATCHER_EVENT_IL_DC_IDENTIFIER: '76fdee70-8119-5d33-aaaa-3c57e1c60df1',
  VMCATCHER_EVENT_AD_MPURI: 'https://appdb.somewhere.net/store/vo/image/c0482bc2-bf41-5d49-aaaa-a750174a186b:484/',
  VMCATCHER_EVENT_VO: 'some1.vo.net',
};

let dir: string;
const topologies: Array<ReturnType<typeof uniqueTopology>> = [];

/** Declares the queue and binding up front, so "nothing was published" can be observed. */
async function declare(topology: ReturnType<typeof uniqueTopology>): Promise<void> {
  const conn = await amqp.connect(RABBIT_URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(topology.exchange, 'topic', { durable: true });
    await ch.assertQueue(topology.queue, { durable: true });
    await ch.bindQueue(topology.queue, topology.exchange, topology.routingKey);
  } finally {
    await conn.close();
  }
}

async function setup(extra = '') {
  const topology = uniqueTopology('enq');
  topologies.push(topology);
  await declare(topology);
  const spool = await mkdtemp(path.join(dir, 'spool-'));
  const security = `security { allowedFileFolders = ["${LISTS}"], caPath = "${LISTS}/cloudkeeper-test-ca-9da13359.0", pinEndorser = false, endorsers = [{ dn = "/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd", ca = "/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd" }] }`;
  const good = await writeConf(topology, `spool { folder = "${spool}" }\n${security}\n${extra}`);
  return { topology, spool, good };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'snf-enq-'));
});

afterAll(async () => {
  for (const t of topologies) await deleteTopology(t);
  await rm(dir, { recursive: true, force: true });
});

describe('enqueue-from-env (the vmcatcher hook)', () => {
  test('an AvailablePostfix environment puts exactly one persistent JSON message with every key on the queue', async () => {
    const { topology, good } = await setup();
    const r = await runCli(['-v', 'enqueue-from-env', '-conf', good], { env: AVAILABLE_POSTFIX });
    expect(r.exitCode).toBe(0);
    const messages = await takeAll(topology.queue);
    expect(messages).toHaveLength(1);
    const [msg] = messages;
    expect(msg.properties.deliveryMode).toBe(2);
    expect(msg.properties.contentType).toBe('application/json');
    expect(msg.properties.messageId).toBe(createHash('sha256').update(msg.content).digest('hex'));
    expect(typeof msg.properties.timestamp).toBe('number');
    expect(msg.fields.routingKey).toBe(topology.routingKey);
    expect(JSON.parse(msg.content.toString('utf8'))).toEqual(AVAILABLE_POSTFIX);
  });

  test.each(['ProcessPrefix', 'ProcessPostfix', 'AvailablePrefix', 'ExpirePrefix', 'SubscriptionImageNew'])(
    '%s needs no action: skipped with exit 0, nothing on the queue',
    async (type) => {
      const { topology, good } = await setup();
      const r = await runCli(['enqueue-from-env', '--conf', good], {
        env: { ...AVAILABLE_POSTFIX, VMCATCHER_EVENT_TYPE: type },
      });
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toContain('event needs no action');
      expect(await takeAll(topology.queue)).toHaveLength(0);
    },
  );

  test('with the broker unreachable the event is spooled (exit 0, warning) and the next enqueue publishes it first', async () => {
    const { topology, spool, good } = await setup();
    const port = await closedPort();
    const down = await writeConf(topology, `spool { folder = "${spool}" }\nrabbitmq.connectTimeoutMs = 2000`, [
      `127.0.0.1:${port}`,
    ]);
    const first = await runCli(['enqueue-from-env', '-conf', down], { env: AVAILABLE_POSTFIX });
    expect(first.exitCode).toBe(0);
    expect(first.stderr).toMatch(
      /warning: event not published \(cannot connect to RabbitMQ.*connection refused\); spooled to /,
    );
    expect((await readdir(spool)).filter((n) => n.endsWith('.json'))).toHaveLength(1);
    // A second event while the broker is still down: both wait, in order.
    const secondEnv = {
      ...AVAILABLE_POSTFIX,
      VMCATCHER_EVENT_TYPE: 'ExpirePostfix',
      VMCATCHER_EVENT_FILENAME: 'c0482bc2.2015-06-18_21-14-00',
    };
    expect((await runCli(['enqueue-from-env', '-conf', down], { env: secondEnv })).exitCode).toBe(0);
    expect(await takeAll(topology.queue)).toHaveLength(0);

    const third = { ...AVAILABLE_POSTFIX, VMCATCHER_EVENT_UUID_SESSION: 'later' };
    const back = await runCli(['enqueue-from-env', '-conf', good], { env: third });
    expect(back.exitCode).toBe(0);
    const bodies = (await takeAll(topology.queue)).map((m) => JSON.parse(m.content.toString('utf8')));
    expect(bodies.map((b) => [b.VMCATCHER_EVENT_TYPE, b.VMCATCHER_EVENT_UUID_SESSION])).toEqual([
      ['AvailablePostfix', AVAILABLE_POSTFIX.VMCATCHER_EVENT_UUID_SESSION],
      ['ExpirePostfix', AVAILABLE_POSTFIX.VMCATCHER_EVENT_UUID_SESSION],
      ['AvailablePostfix', 'later'],
    ]);
    expect(await readdir(spool)).toEqual([]);
  });

  test('a broker that accepts the connection but never answers: the event is spooled within the timeout', async () => {
    const { topology, spool } = await setup();
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const { port } = silent.address() as net.AddressInfo;
      const mute = await writeConf(topology, `spool { folder = "${spool}" }\nrabbitmq.connectTimeoutMs = 1000`, [
        `127.0.0.1:${port}`,
      ]);
      const started = Date.now();
      const r = await runCli(['enqueue-from-env', '-conf', mute], { env: AVAILABLE_POSTFIX });
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toContain('spooled to');
      expect(Date.now() - started).toBeLessThan(15_000);
      expect((await readdir(spool)).filter((n) => n.endsWith('.json'))).toHaveLength(1);
    } finally {
      silent.close();
    }
  });

  test('a corrupt spool file is moved aside as *.bad, never deleted, and the others are published', async () => {
    const { topology, spool, good } = await setup();
    await writeFile(
      path.join(spool, '000000000000001-000001-1-aaaaaa.json'),
      '{"VMCATCHER_EVENT_TYPE": "AvailablePostfix", trunc',
    );
    await writeFile(
      path.join(spool, '000000000000002-000001-1-bbbbbb.json'),
      JSON.stringify({ ...AVAILABLE_POSTFIX, VMCATCHER_EVENT_UUID_SESSION: 'spooled' }),
    );
    const r = await runCli(['enqueue-from-env', '-conf', good], { env: AVAILABLE_POSTFIX });
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain('spooled message is not a valid event; moved aside');
    expect(await readdir(spool)).toEqual(['000000000000001-000001-1-aaaaaa.json.bad']);
    const sessions = (await takeAll(topology.queue)).map(
      (m) => JSON.parse(m.content.toString('utf8')).VMCATCHER_EVENT_UUID_SESSION,
    );
    expect(sessions).toEqual(['spooled', AVAILABLE_POSTFIX.VMCATCHER_EVENT_UUID_SESSION]);
  });

  test('a ProcessPrefix (start of every vmcatcher run) drains the spool', async () => {
    const { topology, spool, good } = await setup();
    await writeFile(path.join(spool, '000000000000002-000001-1-cccccc.json'), JSON.stringify(AVAILABLE_POSTFIX));
    const r = await runCli(['enqueue-from-env', '-conf', good], { env: { VMCATCHER_EVENT_TYPE: 'ProcessPrefix' } });
    expect(r.exitCode).toBe(0);
    expect(await takeAll(topology.queue)).toHaveLength(1);
    expect(await readdir(spool)).toEqual([]);
  });
});

describe('enqueue-from-image-list', () => {
  test('puts one message per image on the queue, with the list id, VO and sha512', async () => {
    const { topology, good } = await setup();
    const r = await runCli(['enqueue-from-image-list', '-conf', good, '-image-list-url', SIGNED_URL]);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain('Parsed image list dc:identifier = 76fdee70-8119-5d33-aaaa-3c57e1c60df1');
    expect(r.stderr).toContain('Matched 2 event(s)');
    expect(r.stderr).toContain(
      'Enqueueing event for dc:identifier = c0482bc2-bf41-5d49-aaaa-a750174a186b, hv:uri = https://',
    );
    expect(r.stderr).toContain('Enqueued 2 event(s)');
    const bodies = (await takeAll(topology.queue)).map((m) => JSON.parse(m.content.toString('utf8')));
    expect(bodies.map((b) => b.VMCATCHER_EVENT_DC_IDENTIFIER)).toEqual([
      'c0482bc2-bf41-5d49-aaaa-a750174a186b',
      '662b0e71-3e21-bbbb-b6a1-cc2f51319fa7',
    ]);
    expect(bodies[0]).toMatchObject({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: '76fdee70-8119-5d33-aaaa-3c57e1c60df1',
      VMCATCHER_EVENT_VO: 'some1.vo.net',
      VMCATCHER_EVENT_HV_SIZE: '121243136',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: expect.stringMatching(/^5c548a09/),
    });
    expect(bodies[0].VMCATCHER_EVENT_TYPE).toBeUndefined();
  });

  test('with -image-identifier exactly one message; an unknown identifier lists the available ones', async () => {
    const { topology, good } = await setup();
    const one = await runCli([
      'enqueue-from-image-list',
      '-conf',
      good,
      '-image-list-url',
      SIGNED_URL,
      '-image-identifier',
      '662b0e71-3e21-bbbb-b6a1-cc2f51319fa7',
    ]);
    expect(one.exitCode).toBe(0);
    const messages = await takeAll(topology.queue);
    expect(messages.map((m) => JSON.parse(m.content.toString('utf8')).VMCATCHER_EVENT_DC_IDENTIFIER)).toEqual([
      '662b0e71-3e21-bbbb-b6a1-cc2f51319fa7',
    ]);

    const unknown = await runCli([
      'enqueue-from-image-list',
      '-conf',
      good,
      '-image-list-url',
      SIGNED_URL,
      '-image-identifier',
      'nope',
    ]);
    expect(unknown.exitCode).not.toBe(0);
    expect(unknown.stderr).toContain('Image identifier nope not found');
    expect(unknown.stderr).toContain(
      'Available identifiers are: c0482bc2-bf41-5d49-aaaa-a750174a186b, 662b0e71-3e21-bbbb-b6a1-cc2f51319fa7',
    );
    expect(await takeAll(topology.queue)).toHaveLength(0);
  });
});
