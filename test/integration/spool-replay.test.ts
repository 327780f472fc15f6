import { chmod, chown, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import amqp from 'amqplib';
import pino from 'pino';
import { parseConfig, type Config } from '../../core/config.js';
import { openPublisher, type Publisher } from '../../bridge/publisher.js';
import { replaySpool, spoolMessage, type ReplayResult } from '../../bridge/spool.js';
import { BIN, ROOT } from '../support/cli.js';
import { deleteTopology, RABBIT_URL, uniqueTopology, writeConf } from '../support/rabbit.js';
import { executionsByImage, registerBody, spawnCli, temporalClient, uniqueId, waitFor } from '../support/bridge.js';

type Topology = ReturnType<typeof uniqueTopology>;

/** The main queue plus a second queue on the same binding that nobody consumes: every publish lands there once. */
async function declareWithTap(topology: Topology): Promise<string> {
  const tap = `${topology.queue}.tap`;
  const conn = await amqp.connect(RABBIT_URL);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(topology.exchange, 'topic', { durable: true });
    for (const q of [topology.queue, tap]) {
      await ch.assertQueue(q, { durable: true });
      await ch.bindQueue(q, topology.exchange, topology.routingKey);
    }
  } finally {
    await conn.close();
  }
  return tap;
}

/** Message ids on a queue → how many copies (takes them off the queue). */
async function copiesById(queue: string): Promise<Map<string, number>> {
  const conn = await amqp.connect(RABBIT_URL);
  const copies = new Map<string, number>();
  try {
    const ch = await conn.createChannel();
    for (;;) {
      const msg = await ch.get(queue, { noAck: true });
      if (!msg) break;
      const id = String(msg.properties.messageId);
      copies.set(id, (copies.get(id) ?? 0) + 1);
    }
  } finally {
    await conn.close();
  }
  return copies;
}

async function depth(queue: string): Promise<number> {
  const conn = await amqp.connect(RABBIT_URL);
  try {
    return (await (await conn.createChannel()).checkQueue(queue)).messageCount;
  } finally {
    await conn.close();
  }
}

function configFor(topology: Topology, folder: string): Config {
  return parseConfig(
    {
      rabbitmq: {
        servers: ['127.0.0.1:5672'],
        queue: topology.queue,
        exchange: topology.exchange,
        routingKey: topology.routingKey,
      },
      spool: { folder },
    },
    'test',
  );
}

const silent = pino({ level: 'silent' });

describe('spool replay publishes every spooled file exactly once', () => {
  let dir: string;
  const topologies: Topology[] = [];
  const cleanups: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'spool-replay-'));
  });
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
    for (const t of topologies) {
      await deleteTopology(t);
      const conn = await amqp.connect(RABBIT_URL);
      await (await conn.createChannel()).deleteQueue(`${t.queue}.tap`).catch(() => undefined);
      await conn.close();
    }
    await rm(dir, { recursive: true, force: true });
  });

  test('replays started while another replay of this process is publishing, and a claim named with this pid by an earlier process', async () => {
    const topology = uniqueTopology('spool-conc');
    topologies.push(topology);
    const tap = await declareWithTap(topology);
    const folder = path.join(dir, 'concurrent');
    const config = configFor(topology, folder);
    const listId = uniqueId('spool-conc');
    const files: string[] = [];
    for (let n = 0; n < 40; n++) files.push(await spoolMessage(folder, Buffer.from(registerBody(listId, n))));
    // A previous process with the same pid (a restarted container) died holding this claim.
    await rename(files[39], `${files[39]}.claimed-${process.pid}`);
    // A live process of another pid holds this one: it is left alone.
    const holder = execa('sleep', ['60'], { reject: false });
    cleanups.push(async () => holder.kill());
    const heldBody = Buffer.from(registerBody(listId, 1000));
    const held = await spoolMessage(folder, heldBody);
    await rename(held, `${held}.claimed-${holder.pid}`);

    // Each reconnect of a bridge starts a replay; here, new replays start while one is in the
    // middle of a publish, holding a claim.
    const publishers: Publisher[] = [];
    const replays: Array<Promise<ReplayResult>> = [];
    let publishes = 0;
    const startReplay = async (): Promise<void> => {
      const real = await openPublisher(config.rabbitmq);
      publishers.push(real);
      const wrapped: Publisher = {
        ...real,
        async publishBody(body) {
          publishes++;
          if (publishes === 3 || publishes === 10 || publishes === 20) {
            await startReplay();
            await new Promise((r) => setTimeout(r, 100)); // room for the new replay to look at the folder
          }
          return real.publishBody(body);
        },
      };
      replays.push(replaySpool(config, wrapped, silent));
    };
    await startReplay();
    for (let seen = -1; seen !== replays.length;) {
      seen = replays.length;
      await Promise.allSettled(replays);
    }
    for (const p of publishers) await p.close();

    const results = await Promise.allSettled(replays);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    const published = results.reduce((sum, r) => sum + (r.status === 'fulfilled' ? r.value.published : 0), 0);
    expect(published).toBe(40);

    const copies = await copiesById(tap);
    expect(copies.size).toBe(40);
    expect([...copies.values()].filter((n) => n !== 1)).toEqual([]);
    // Only the live process's claim is left.
    expect(await readdir(folder)).toEqual([path.basename(`${held}.claimed-${holder.pid}`)]);

    // Once that process is gone, its claim is taken back and published, once.
    holder.kill();
    await holder;
    const publisher = await openPublisher(config.rabbitmq);
    try {
      expect((await replaySpool(config, publisher, silent)).published).toBe(1);
      expect((await replaySpool(config, publisher, silent)).published).toBe(0);
    } finally {
      await publisher.close();
    }
    expect(await readdir(folder)).toEqual([]);
    expect([...(await copiesById(tap)).values()]).toEqual([1]);
  });

  test('the real bridge, reconnecting again and again while it replays, publishes each spooled file once', async () => {
    const topology = uniqueTopology('spool-bridge');
    topologies.push(topology);
    const tap = await declareWithTap(topology);
    const folder = path.join(dir, 'bridge-spool');
    const listId = uniqueId('spool-bridge');
    const count = 400;
    for (let n = 0; n < count; n++) await spoolMessage(folder, Buffer.from(registerBody(listId, n)));
    const conf = await writeConf(topology, `spool { folder = "${folder}" }`);
    const bridge = spawnCli(['dequeue', '--server', '--conf', conf, '--prefetch', '8'], {
      TEMPORAL_TASK_QUEUE: uniqueId('spool-bridge-tq'),
    });
    cleanups.push(() => bridge.stop());
    await bridge.waitForLog(/"msg":"consuming"/, 60_000);
    // Deleting the queue cancels the bridge's consumer: it reconnects (declaring the queue
    // again), and every connect asks for a replay, while the first one is still publishing.
    const conn = await amqp.connect(RABBIT_URL);
    let cuts = 0;
    try {
      const ch = await conn.createChannel();
      while (cuts < 20 && (await readdir(folder)).length > 0) {
        await ch.deleteQueue(topology.queue);
        cuts++;
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      await conn.close();
    }
    expect(cuts).toBeGreaterThanOrEqual(3);
    await waitFor(
      'the spool to empty',
      () => readdir(folder),
      (names) => names.length === 0,
      120_000,
    );
    await waitFor(
      `${count} messages on the tap queue`,
      () => depth(tap),
      (n) => n >= count,
      30_000,
    );
    await new Promise((r) => setTimeout(r, 1000)); // a late duplicate would show up by now
    // Each cut that found the bridge connected made it reconnect, while the replay went on.
    expect((bridge.stderr().match(/"msg":"connected to RabbitMQ"/g) ?? []).length).toBeGreaterThanOrEqual(3);
    expect(await bridge.stop()).toBe(0);

    const copies = await copiesById(tap);
    expect(copies.size).toBe(count);
    expect([...copies.values()].filter((n) => n !== 1)).toEqual([]);
  });
});

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Runs `node bin/snf-vmcatcher.js` as another user, with numeric ids (no account needed). */
function asUser(
  ids: { uid: number; gid: number; groups: number[] },
  args: string[],
  env: Record<string, string>,
): ResultPromise {
  return execa(
    'setpriv',
    [
      `--reuid=${ids.uid}`,
      `--regid=${ids.gid}`,
      `--groups=${ids.groups.join(',')}`,
      '--',
      process.execPath,
      BIN,
      ...args,
    ],
    {
      cwd: ROOT,
      env: { SNF_VMCATCHER_LOG_LEVEL: 'info', HOME: '/nonexistent', ...env },
      extendEnv: true,
      reject: false,
      stdin: 'ignore',
    },
  );
}

/**
 * Root can act as other users; those users must also be able to read the checkout (a clone
 * under a private home folder is not): checked by running the CLI as one of them.
 */
function otherUsersCanRunTheCli(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = spawnSync(
    'setpriv',
    ['--reuid=64701', '--regid=64701', '--clear-groups', '--', process.execPath, BIN, 'usage'],
    { cwd: '/', stdio: 'ignore' },
  );
  if (probe.status === 0) return true;
  console.warn('two-user spool tests skipped: not root, no setpriv, or the checkout is not readable by other users');
  return false;
}

(otherUsersCanRunTheCli() ? describe : describe.skip)(
  'the two-user set-up: vmcatcher spools, the bridge (another user) replays',
  () => {
    // Numeric ids that no account on a test machine uses.
    const SHARED_GID = 64_700;
    const VMCATCHER = { uid: 64_701, gid: 64_701, groups: [SHARED_GID] };
    const BRIDGE = { uid: 64_702, gid: 64_702, groups: [SHARED_GID] };
    const topology = uniqueTopology('spool-users');
    let dir: string;
    let bridge: ResultPromise | undefined;

    beforeAll(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'spool-users-'));
      await chmod(dir, 0o755); // the configuration in it is read by both users
    });
    afterAll(async () => {
      if (bridge && bridge.exitCode === null) {
        bridge.kill('SIGTERM');
        await bridge;
      }
      await deleteTopology(topology);
      await rm(dir, { recursive: true, force: true });
    });

    test('events spooled by the hook under umask 077 into a setgid group-writable folder are replayed by the bridge, and the folder ends empty', async () => {
      const spool = path.join(dir, 'spool');
      // The documented set-up (docs/image-lists.md): owned by the writer, group shared with the bridge, setgid, no sticky bit.
      await mkdir(spool);
      await chown(spool, VMCATCHER.uid, SHARED_GID);
      await chmod(spool, 0o2770);
      const listId = uniqueId('two-users');
      const down = await writeConf(topology, `spool { folder = "${spool}" }\nrabbitmq.connectTimeoutMs = 2000`, [
        `127.0.0.1:${await closedPort()}`,
      ]);
      const up = await writeConf(topology, `spool { folder = "${spool}" }`);
      for (const file of [down, up]) {
        await chmod(path.dirname(file), 0o755);
        await chmod(file, 0o644);
      }

      // A hardened hook environment: nothing group-readable unless the program asks for it.
      const umask = process.umask(0o077);
      let hooks;
      try {
        hooks = await Promise.all(
          [0, 1, 2].map((n) =>
            asUser(VMCATCHER, ['enqueue-from-env', '--conf', down], {
              VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
              VMCATCHER_EVENT_DC_IDENTIFIER: `image-${n}`,
              VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
              VMCATCHER_EVENT_HV_URI: `http://images.example.invalid/${listId}/${n}.img`,
              VMCATCHER_EVENT_VO: 'test.vo',
            }),
          ),
        );
      } finally {
        process.umask(umask);
      }
      for (const hook of hooks) {
        expect(hook.exitCode).toBe(0);
        expect(String(hook.stderr)).toContain('spooled to');
      }
      const spooled = (await readdir(spool)).filter((n) => n.endsWith('.json'));
      expect(spooled).toHaveLength(3);
      for (const name of spooled) {
        const info = await stat(path.join(spool, name));
        expect([info.uid, info.gid, (info.mode & 0o777).toString(8)]).toEqual([VMCATCHER.uid, SHARED_GID, '640']);
      }

      // The bridge runs as its own user; the spool is the only thing the two share.
      const temporal = await temporalClient();
      try {
        const child = asUser(BRIDGE, ['dequeue', '--server', '--conf', up], {
          TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS!,
          TEMPORAL_TASK_QUEUE: uniqueId('two-users-tq'),
        });
        bridge = child;
        let stderr = '';
        child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
        await waitFor(
          'the spool to empty',
          () => readdir(spool),
          (names) => names.length === 0,
          60_000,
        );
        const byImage = await waitFor(
          '3 workflows',
          () => executionsByImage(temporal.client, listId),
          (m) => m.size >= 3,
          60_000,
        );
        expect([...byImage.entries()].sort()).toEqual([
          ['image-0', 1],
          ['image-1', 1],
          ['image-2', 1],
        ]);
        child.kill('SIGTERM');
        expect((await child).exitCode).toBe(0);
        expect(stderr).toMatch(/"published":3/);
        expect(stderr).not.toMatch(/could not replay the spool|may not be able to replay/);
      } finally {
        await temporal.close();
      }
    });

    test("a spool folder with the sticky bit: the bridge says at start why it cannot replay the hook's files", async () => {
      const spool = path.join(dir, 'sticky');
      await mkdir(spool);
      await chown(spool, VMCATCHER.uid, SHARED_GID);
      await chmod(spool, 0o3770);
      const body = Buffer.from(registerBody(uniqueId('sticky'), 0));
      await writeFile(path.join(spool, '000000000000001-000001-1-aaaaaa.json'), body, { mode: 0o640 });
      await chown(path.join(spool, '000000000000001-000001-1-aaaaaa.json'), VMCATCHER.uid, SHARED_GID);
      const conf = await writeConf(topology, `spool { folder = "${spool}" }`);
      await chmod(path.dirname(conf), 0o755);
      await chmod(conf, 0o644);
      const child = asUser(BRIDGE, ['dequeue', '--server', '--conf', conf], {
        TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS!,
        TEMPORAL_TASK_QUEUE: uniqueId('sticky-tq'),
      });
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      try {
        await waitFor(
          'the replay to fail',
          async () => stderr,
          (s) => /could not replay the spool/.test(s),
          30_000,
        );
      } finally {
        child.kill('SIGTERM');
        await child;
      }
      expect(stderr).toMatch(/may not be able to replay spooled events: .*sticky.* has the sticky bit/);
      expect(stderr).toMatch(
        /cannot move .*000000000000001-000001-1-aaaaaa\.json in the spool folder: EPERM.*setgid, without the sticky bit/,
      );
      // Nothing lost: the file is still there, unclaimed.
      expect(await readdir(spool)).toEqual(['000000000000001-000001-1-aaaaaa.json']);
    });
  },
);
