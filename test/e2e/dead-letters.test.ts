import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';
import { execa } from 'execa';
import { startAmqpProxy } from '../support/amqp-proxy.js';
import { publishBodies, queueDepth, spawnCli, waitFor, type CliProcess } from '../support/bridge.js';
import { BIN, ROOT, runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { deleteTopology, RABBIT_URL, takeAll, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';

interface Row {
  number: number;
  id: string;
  deadLetteredAt?: string;
  reason: string;
  key?: string;
  detail?: string;
  imageIdentifier?: string;
  imageListIdentifier?: string;
  messageId?: string;
  replays: number;
}

const DAY = 24 * 60 * 60 * 1000;

/**
 * Dead letters, through the real command line: poison messages dead-lettered by the bridge
 * (and one by RabbitMQ itself), listed with their reason without disturbing the queue, shown,
 * replayed after the cause is removed (they then register), purged; a replay killed between the
 * broker's confirm and its ack loses nothing.
 */
describe('dead-letters', () => {
  const topology = uniqueTopology('deadl');
  const ttlQueue = `${topology.queue}.ttl`;
  const listId = `deadl-list-${Math.random().toString(16).slice(2, 10)}`;
  const taskQueue = uniqueTaskQueue('deadl');
  let dir: string;
  let conf: string;
  let server: TestServer;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let service: ServiceProcess | undefined;
  let env: Record<string, string>;

  const list = async (): Promise<Row[]> => {
    const result = await runCli(['dead-letters', '--conf', conf, '--json']);
    expect(result.exitCode).toBe(0);
    return result.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Row);
  };
  const event = (imageId: string, extra: Record<string, string> = {}) =>
    JSON.stringify({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
      VMCATCHER_EVENT_DC_TITLE: `Image ${imageId}`,
      VMCATCHER_EVENT_HV_VERSION: '1.0',
      VMCATCHER_EVENT_HV_FORMAT: 'qcow2',
      VMCATCHER_EVENT_VO: 'test.vo',
      ...extra,
    });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-deadl-'));
    const raw = path.join(dir, 'disk.raw');
    const qcow2 = path.join(dir, 'disk.qcow2');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    server = await startTestServer({ routes: { '/a.qcow2': { file: qcow2 }, '/b.qcow2': { file: qcow2 } } });
    cloud = await fakeCloud(dir, 'deadl');
    conf = await writeConf(
      topology,
      `worker { workingFolder = "${dir}/work" }
spool { folder = "${dir}/spool" }
# The events carry no checksum: this test is about the dead-letter queue.
security { allowUnverifiedImages = true }
${cloud.synnefoConf('cloud = "deadl"\n  prepare = false')}`,
    );
    env = { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env };

    // A bridge whose Temporal task queue name the server refuses (longer than its 1000-character
    // limit): every valid event is refused by Temporal and dead-lettered, the invalid ones as usual.
    const misconfigured: CliProcess = spawnCli(['dequeue', '--server', '--conf', conf], {
      ...env,
      TEMPORAL_TASK_QUEUE: 'q'.repeat(1001),
    });
    try {
      await misconfigured.waitForLog(/consuming/);
      await publishBodies(topology, [
        event('image-a', { VMCATCHER_EVENT_HV_URI: server.at('/a.qcow2') }),
        event('image-b', { VMCATCHER_EVENT_HV_URI: server.at('/b.qcow2') }),
        'not json at all',
        event('image-c'),
      ]);
      await waitFor(
        '4 dead letters',
        () => queueDepth(topology.deadLetterQueue),
        (n) => n === 4,
        60_000,
      );
    } finally {
      await misconfigured.stop();
    }

    const conn = await amqp.connect(RABBIT_URL);
    try {
      const ch = await conn.createConfirmChannel();
      // RabbitMQ dead-letters by itself too (a site's policy, a message TTL): x-death says why.
      await ch.assertQueue(ttlQueue, {
        durable: true,
        arguments: {
          'x-message-ttl': 1,
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': topology.deadLetterQueue,
        },
      });
      ch.sendToQueue(ttlQueue, Buffer.from(event('image-e')), { persistent: true, messageId: 'm-expired' });
      await ch.waitForConfirms();
      await waitFor(
        'the expired message',
        () => queueDepth(topology.deadLetterQueue),
        (n) => n === 5,
        30_000,
      );
      // What an earlier bridge dead-lettered 40 days ago.
      ch.sendToQueue(topology.deadLetterQueue, Buffer.from('{"VMCATCHER_EVENT_DC_IDENTIFIER": 7}'), {
        persistent: true,
        messageId: 'm-old',
        headers: {
          'x-snf-vmcatcher-reason': 'invalid-value',
          'x-snf-vmcatcher-error': 'VMCATCHER_EVENT_DC_IDENTIFIER: expected a string',
          'x-snf-vmcatcher-dead-lettered-at': new Date(Date.now() - 40 * DAY).toISOString(),
          'x-snf-vmcatcher-dead-letter-id': '0123456789ab',
        },
      });
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
  }, 180_000);

  afterAll(async () => {
    await service?.stop();
    await server?.close();
    await deleteTopology(topology);
    const conn = await amqp.connect(RABBIT_URL);
    await (await conn.createChannel()).deleteQueue(ttlQueue).catch(() => undefined);
    await conn.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('lists every dead letter with when, why and the image it names, in order, leaving the queue as it was; show prints one', async () => {
    const rows = await list();
    expect(rows.map((r) => r.number)).toEqual([1, 2, 3, 4, 5, 6]);
    // The bridge settles messages concurrently (an invalid one at once, a valid one after Temporal
    // answers), so its four may be in any order; RabbitMQ's and the old one came after them.
    const found = (messageId: string) => rows.find((r) => r.messageId === messageId)!;
    expect(['m-0', 'm-1', 'm-2', 'm-3'].map((m) => [found(m).reason, found(m).imageIdentifier])).toEqual([
      ['rejected-by-temporal', 'image-a'],
      ['rejected-by-temporal', 'image-b'],
      ['invalid-json', undefined],
      ['missing-key', 'image-c'],
    ]);
    expect(rows.slice(4).map((r) => [r.reason, r.imageIdentifier, r.messageId])).toEqual([
      ['rabbitmq-expired', 'image-e', 'm-expired'],
      ['invalid-value', undefined, 'm-old'],
    ]);
    expect(found('m-0').detail).toMatch(/Temporal refused the start: .*taskQueue length exceeds limit/);
    expect(found('m-3')).toMatchObject({ key: 'VMCATCHER_EVENT_HV_URI', imageListIdentifier: listId });
    expect(rows[4].detail).toBe(`RabbitMQ dead-lettered it from queue '${ttlQueue}' (expired)`);
    expect(Date.now() - Date.parse(found('m-0').deadLetteredAt!)).toBeLessThan(DAY);
    expect(Date.now() - Date.parse(rows[4].deadLetteredAt!)).toBeLessThan(DAY);
    expect(rows[5]).toMatchObject({ id: '0123456789ab' });
    expect(new Set(rows.map((r) => r.id)).size).toBe(6);

    // Reading again (twice more, the old single-dash spelling once) changes nothing: same messages, same order, same ids.
    expect(await list()).toEqual(rows);
    const table = await runCli(['dead-letters', '-conf', conf]);
    expect(table.exitCode).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^#\s+ID\s+DEAD-LETTERED\s+REASON\s+IMAGE\s+IMAGE LIST\s+DETAIL$/);
    const a = found('m-0');
    expect(lines[a.number]).toMatch(
      new RegExp(
        `^${a.number}\\s+${a.id}\\s+\\S+ \\S+\\s+rejected-by-temporal\\s+image-a\\s+${listId}\\s+Temporal refused`,
      ),
    );
    expect(lines).toHaveLength(7);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(6);

    const byNumber = await runCli(['dead-letters', 'show', String(found('m-2').number), '--conf', conf]);
    expect(byNumber.exitCode).toBe(0);
    expect(byNumber.stdout).toContain('Reason: invalid-json');
    expect(byNumber.stdout).toMatch(/Body:\nnot json at all$/);
    const byId = await runCli(['dead-letters', 'show', found('m-3').id, '--conf', conf]);
    expect(byId.stdout).toContain('Key: VMCATCHER_EVENT_HV_URI');
    expect(byId.stdout).toContain('Image: image-c');
    expect(byId.stdout).toContain(`"VMCATCHER_EVENT_IL_DC_IDENTIFIER": "${listId}"`);
    const missing = await runCli(['dead-letters', 'show', '99', '--conf', conf]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain(`snf-vmcatcher: no dead letter 99 in queue '${topology.deadLetterQueue}'`);
  });

  test('replayed once the bridge is fixed, the refused events register; a replayed message that fails again is back with its new reason', async () => {
    const before = await list();
    const found = (messageId: string) => before.find((r) => r.messageId === messageId)!;
    // The fix: the bridge (and worker) run with a task queue name the server accepts.
    service = await startService(['run', '--conf', conf], { env, readyPattern: /consuming/ });

    const first = await runCli(['dead-letters', 'replay', '--image-identifier', 'image-a', '--conf', conf]);
    expect(first.exitCode).toBe(0);
    const a = found('m-0');
    expect(first.stdout).toBe(`Replayed #${a.number} ${a.id}: image-a of ${listId} (was rejected-by-temporal)`);
    // By id (positions shifted when image-a left): image-b, and the message RabbitMQ expired.
    const second = await runCli(['dead-letters', 'replay', found('m-1').id, found('m-expired').id, '--conf', conf]);
    expect(second.exitCode).toBe(0);
    expect(second.stdout.trim().split('\n')).toHaveLength(2);

    await waitFor(
      'two images registered',
      () => cloud.images(),
      (images) => images.length === 2,
      120_000,
    );
    const images = await cloud.images();
    expect(images.map((i) => i.properties.VMCATCHER_DC_IDENTIFIER).sort()).toEqual(['image-a', 'image-b']);

    // The expired message lacked its URL all along: the bridge dead-letters it again, with its own reason.
    const after = await waitFor(
      'the replayed invalid message back in the dead-letter queue',
      list,
      (rows) => rows.length === 4,
      60_000,
    );
    const replayed = new Set(['m-0', 'm-1', 'm-expired']);
    expect(after.slice(0, 3).map((r) => r.id)).toEqual(
      before.filter((r) => !replayed.has(r.messageId!)).map((r) => r.id),
    );
    expect(after[3]).toMatchObject({
      reason: 'missing-key',
      key: 'VMCATCHER_EVENT_HV_URI',
      imageIdentifier: 'image-e',
      messageId: 'm-expired',
      replays: 1,
    });
    expect(after[3].id).not.toBe(found('m-expired').id);
    expect(Date.parse(after[3].deadLetteredAt!)).toBeGreaterThan(Date.parse(found('m-expired').deadLetteredAt!));
    const shown = await runCli(['dead-letters', 'show', after[3].id, '--conf', conf]);
    expect(shown.stdout).toContain('Replayed: 1 time(s) before');
  }, 200_000);

  test('purge --older-than takes only the dead letters older than that; replay --all replays each once even as they fail again; purge takes the rest', async () => {
    const rows = await list();
    const old = await runCli(['dead-letters', 'purge', '--older-than', '30d', '--conf', conf]);
    expect(old.exitCode).toBe(0);
    const old40 = rows.find((r) => r.id === '0123456789ab')!;
    expect(old.stdout).toMatch(
      new RegExp(
        `^Purged #${old40.number} 0123456789ab: \\(no image identifier\\) of \\(no image list\\) \\(invalid-value, `,
      ),
    );
    expect(old.stdout.trim().split('\n')).toHaveLength(1);
    expect((await list()).map((r) => r.id)).toEqual(rows.filter((r) => r.id !== '0123456789ab').map((r) => r.id));

    // Replayed while the bridge runs, the invalid ones fail again and come back during the pass:
    // each is replayed once, the pass ends with the messages it started with.
    const remaining = await list();
    const all = await runCli(['dead-letters', 'replay', '--all', '--conf', conf]);
    expect(all.exitCode).toBe(0);
    expect(all.stdout.split('\n')).toHaveLength(3);
    expect(all.stderr).toContain(`Replayed 3 of 3 dead letter(s) to queue '${topology.queue}'`);
    const back = await waitFor('the three back', list, (r) => r.length === 3, 60_000);
    const byMessage = (rows: Row[], add = 0) =>
      rows.map((r) => [r.messageId, r.replays + add]).sort((x, y) => String(x[0]).localeCompare(String(y[0])));
    // The bridge settles them concurrently: they may come back in another order.
    expect(byMessage(back)).toEqual(byMessage(remaining, 1));

    const rest = await runCli(['dead-letters', 'purge', '--conf', conf]);
    expect(rest.exitCode).toBe(0);
    expect(rest.stdout.trim().split('\n')).toHaveLength(3);
    expect(await queueDepth(topology.deadLetterQueue)).toBe(0);
    const empty = await runCli(['dead-letters', '--conf', conf]);
    expect(empty.stderr).toContain(`No dead letters in queue '${topology.deadLetterQueue}'`);
  });
});

describe('dead-letters replay killed midway', () => {
  const topology = uniqueTopology('deadkill');

  afterAll(() => deleteTopology(topology));

  test('killed after the broker confirmed the republished message but before its ack: the message is on both queues, none is lost', async () => {
    const conn = await amqp.connect(RABBIT_URL);
    try {
      const ch = await conn.createConfirmChannel();
      await ch.assertQueue(topology.deadLetterQueue, { durable: true });
      for (const id of ['m-0', 'm-1', 'm-2'])
        ch.sendToQueue(topology.deadLetterQueue, Buffer.from(JSON.stringify({ id })), {
          persistent: true,
          messageId: id,
          headers: { 'x-snf-vmcatcher-reason': 'rejected-by-temporal' },
        });
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    const proxy = await startAmqpProxy();
    try {
      const conf = await writeConf(topology, '', [`127.0.0.1:${proxy.port}`]);
      const replay = execa('node', [BIN, 'dead-letters', 'replay', '--all', '--conf', conf], {
        cwd: ROOT,
        reject: false,
      });
      // The first ack leaves the command only after the broker confirmed the publish; the proxy holds it.
      await proxy.ackHeld;
      replay.kill('SIGKILL');
      const result = await replay;
      expect(result.signal).toBe('SIGKILL');
      expect(String(result.stdout)).toMatch(/^Replayed #1 [0-9a-f]{12}: /);
    } finally {
      await proxy.close();
    }
    await waitFor(
      'the unacked message back',
      () => queueDepth(topology.deadLetterQueue),
      (n) => n === 3,
      30_000,
    );
    const queued = await takeAll(topology.queue);
    const dead = await takeAll(topology.deadLetterQueue);
    expect(queued.map((m) => m.properties.messageId)).toEqual(['m-0']);
    expect(dead.map((m) => m.properties.messageId)).toEqual(['m-0', 'm-1', 'm-2']);
  }, 120_000);
});
