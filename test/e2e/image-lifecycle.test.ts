import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { parseConfig } from '../../core/config.js';
import { ImageEventSchema, type ImageEvent } from '../../core/event.js';
import { startWorkflowForEvent } from '../../core/starter.js';
import { registrationSite } from '../../clouds/index.js';
import type { ImageRevisionResult, RegistrationOptions } from '../../core/workflow-contract.js';
import { ROOT } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { servedDisk, startThrottledFileServer, waitForDownloadOffset } from '../support/throttled-file-server.js';
import { registrationOf } from '../support/workflows.js';

const MiB = 1024 * 1024;

/**
 * Registration and expiry of one image revision converge on the last event,
 * whatever the order in which the work would otherwise finish, and the handler and the cloud
 * are part of a registration's identity. Events go in as the bridge delivers them
 * (core/starter.ts), to the real worker; only kamaki and snf-mkimage are fakes.
 */
describe('image lifecycle: the cloud follows the last event', () => {
  let dir: string;
  let worker: ServiceProcess;
  let connection: Connection;
  let client: Client;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let config: ReturnType<typeof parseConfig>;
  const servers: Array<Awaited<ReturnType<typeof startThrottledFileServer>>> = [];

  const image = async (name: string, mib: number, rate: number) => {
    const disk = await servedDisk(dir, name, mib, rate);
    servers.push(disk.server);
    return disk;
  };
  const event = (
    imageId: string,
    img: { url: string; sha512: string },
    type: 'AvailablePostfix' | 'ExpirePostfix',
  ): ImageEvent =>
    ImageEventSchema.parse({
      origin: 'message',
      type,
      imageListId: 'lifecycle',
      imageId,
      uri: img.url,
      checksumSha512: img.sha512,
      format: 'raw',
    });
  const deliver = async (e: ImageEvent, options: RegistrationOptions = { kamakiCloud: 'e2e' }) => {
    const started = await startWorkflowForEvent(client, config, e, options, registrationSite(config));
    expect(started.outcome).toBe('delivered');
    return started;
  };
  const ours = async (imageId: string) =>
    (await cloud.images()).filter((i) => i.properties.VMCATCHER_DC_IDENTIFIER === imageId);

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-lifecycle-'));
    cloud = await fakeCloud(dir);
    const taskQueue = uniqueTaskQueue('lifecycle');
    const conf = path.join(dir, 'application.conf');
    await writeFile(
      conf,
      `worker {\n  workingFolder = "${dir}/work"\n  heartbeatTimeoutMs = 3000\n}\n${cloud.synnefoConf('prepare = false\n  public = true')}`,
    );
    worker = await startService(['worker', '--conf', conf], { env: { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env } });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
    config = parseConfig({ temporal: { taskQueue }, synnefo: { cloud: 'e2e' } }, 'test');
  });

  afterAll(async () => {
    await worker?.stop();
    for (const s of servers) await s.close();
    await connection?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('Available → Expire → Available again (a list renewed after a lapse): the image is public again', async () => {
    const img = await image('renewed.raw', 4, 64 * MiB);
    const first = await deliver(event('renewed', img, 'AvailablePostfix'));
    expect(((await first.handle!.result()) as ImageRevisionResult).action).toBe('register');
    expect((await ours('renewed')).map((i) => i.is_public)).toEqual([true]);

    const expire = await deliver(event('renewed', img, 'ExpirePostfix'));
    expect(((await expire.handle!.result()) as ImageRevisionResult).action).toBe('expire');
    expect((await ours('renewed')).map((i) => i.is_public)).toEqual([false]);

    const again = await deliver(event('renewed', img, 'AvailablePostfix'));
    const result = (await again.handle!.result()) as ImageRevisionResult;
    expect(result).toMatchObject({ action: 'register', register: { reused: true } });
    expect((await ours('renewed')).map((i) => i.is_public)).toEqual([true]);
    expect(img.server.served).toHaveLength(1);
  });

  test('Expire arriving while the registration downloads: the registration stops, nothing is left public', async () => {
    const img = await image('withdrawn.raw', 16, 2 * MiB);
    const available = await deliver(event('withdrawn', img, 'AvailablePostfix'));
    const registration = await registrationOf(client, available.workflowId!);
    expect(await waitForDownloadOffset(registration, 2 * MiB)).toBeGreaterThanOrEqual(2 * MiB);

    const expire = await deliver(event('withdrawn', img, 'ExpirePostfix'));
    expect(expire.workflowId).toBe(available.workflowId);
    const result = (await available.handle!.result()) as ImageRevisionResult;
    expect(result.action).toBe('expire');
    expect((await registration.describe()).status.name).toBe('CANCELLED');
    // Nothing registered public for it, now or later (the download was stopped, not finished).
    await new Promise((r) => setTimeout(r, 3000));
    expect((await ours('withdrawn')).filter((i) => i.is_public)).toEqual([]);
    const leftovers = await execa('find', [`${dir}/work`, '-type', 'f', '-not', '-name', '.workflow.json']).catch(
      () => ({ stdout: '' }),
    );
    expect(leftovers.stdout).toBe('');
  });

  test('a JustLogHandler trial does not absorb the real registration (the cloud is in the identity too: test/unit/workflow-ids)', async () => {
    const img = await image('trial.raw', 4, 64 * MiB);
    const trial = await deliver(event('trial', img, 'AvailablePostfix'), {
      handler: 'JustLogHandler',
      kamakiCloud: 'e2e',
    });
    await trial.handle!.result();
    expect(await ours('trial')).toEqual([]);

    const real = await deliver(event('trial', img, 'AvailablePostfix'), { kamakiCloud: 'e2e' });
    expect(real.workflowId).not.toBe(trial.workflowId);
    expect((await real.handle!.result()) as ImageRevisionResult).toMatchObject({
      action: 'register',
      register: { reused: false },
    });
    expect(await ours('trial')).toHaveLength(1);
  });
});
