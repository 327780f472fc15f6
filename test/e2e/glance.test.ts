import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { Agent } from 'undici';
import { glanceTarget } from '../../clouds/glance/index.js';
import { GlanceClient, type GlanceImage } from '../../clouds/glance/client.js';
import { KeystoneSession } from '../../clouds/glance/keystone.js';
import { buildGlanceProperties, GLANCE_TAG } from '../../clouds/glance/properties.js';
import { identityFilter } from '../../clouds/identity.js';
import { loadConfig, type GlanceConfig } from '../../core/config.js';
import { eventFromFlat, type ImageEvent } from '../../core/event.js';
import { IDENTITY_PROPERTIES } from '../../core/workflow-contract.js';
import { runCli } from '../support/cli.js';
import { toStreamOptimizedVmdk, writeLinuxMbr } from '../support/disk-images.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { REGION, startOpenStack, type OpenStack } from '../support/openstack.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';

/**
 * Glance end to end, into Debian's real glance-api behind its real Keystone (one start for the
 * file): `register-now` (the real CLI) and vmcatcher's hook line through RabbitMQ and `run`
 * (bridge + worker) register into Glance; a qcow2 goes up as the same qcow2, a vmdk as raw; a
 * repeated event adds nothing; expiry deactivates and makes private; another tenant's image that
 * carries our identity properties is never touched.
 */
const started = performance.now();
const topology = uniqueTopology('glance');
const imageId = '5d0e4b3c-9a1f-4c57-8e2b-13a6b0c4f9d2';
const listId = `list-${Math.random().toString(16).slice(2, 10)}`;
const agent = new Agent();
let openstack: OpenStack;
let dir: string;
let conf: string;
let env: Record<string, string>;
let service: ServiceProcess;
let server: TestServer;
let qcow2: string;
let qcow2Sha512: string;
let vmcatcherEnv: Record<string, string>;
let ours: GlanceClient;
let theirs: GlanceClient;

function client(account: OpenStack['demo']): GlanceClient {
  const session = new KeystoneSession({
    dispatcher: agent,
    authUrl: openstack.keystoneUrl,
    credential: { type: 'application-credential', id: account.appCredentialId, secret: account.appCredentialSecret },
    interface: 'public',
    region: REGION,
  });
  return new GlanceClient({ session, dispatcher: agent });
}

const sha512sum = async (file: string) => (await execa('sha512sum', [file])).stdout.split(' ')[0];

/** What the other tenant made: an active, community image carrying the identity of one of our events. */
async function lookAlike(event: ImageEvent): Promise<GlanceImage> {
  const { properties } = buildGlanceProperties({ event });
  const record = await theirs.createImage({
    name: 'look-alike',
    diskFormat: 'raw',
    containerFormat: 'bare',
    visibility: 'private',
    properties,
    tags: [GLANCE_TAG],
  });
  await theirs.verifyUpload(record.id, await theirs.uploadFile(record.id, path.join(dir, 'disk.raw')));
  return theirs.setVisibility(record.id, 'community');
}

async function untouched(image: GlanceImage): Promise<void> {
  const now = await theirs.getImage(image.id);
  expect(now).toMatchObject({
    status: 'active',
    visibility: 'community',
    owner: openstack.other.projectId,
    updated_at: image.updated_at,
  });
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'snf-glance-e2e-'));
  const cacheDir = path.join(dir, 'cache');
  await mkdir(cacheDir);
  const prepareImages = async () => {
    const raw = path.join(dir, 'disk.raw');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=2', 'seek=2', 'conv=notrunc']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    qcow2 = path.join(dir, 'centos-9.qcow2');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    qcow2Sha512 = await sha512sum(qcow2);
    // vmcatcher names the cached file after the image UUID, with no extension.
    await toStreamOptimizedVmdk(raw, path.join(cacheDir, imageId));
  };
  // Keystone and glance-api take most of the set-up: make the images meanwhile.
  [openstack] = await Promise.all([startOpenStack(), prepareImages()]);
  console.log(`openstack start-up: ${JSON.stringify(openstack.timings)}`);
  server = await startTestServer({ routes: { '/images/centos-9.qcow2': { file: qcow2 } } });

  const cached = path.join(cacheDir, imageId);
  const secretFile = path.join(dir, 'glance-secret');
  await writeFile(secretFile, `${openstack.demo.appCredentialSecret}\n`, { mode: 0o600 });
  conf = await writeConf(
    topology,
    `worker { workingFolder = "${dir}/work" }
spool { folder = "${dir}/spool" }
security {
  vmcatcherCacheFolders = ["${cacheDir}"]
  credentials { glance = { file = "${secretFile}" } }
}
cloud {
  type = glance
  name = e2e
  authUrl = "${openstack.keystoneUrl}"
  applicationCredentialId = "${openstack.demo.appCredentialId}"
  credential = glance
  region = ${REGION}
  visibility = community
  diskFormats = [qcow2, raw]
  properties { hw_disk_bus = virtio }
}`,
  );
  env = { TEMPORAL_TASK_QUEUE: uniqueTaskQueue('glance') };
  vmcatcherEnv = {
    VMCATCHER_EVENT_UUID_SESSION: 'a3c2f3b4-0000-11ee-8000-000000000013',
    VMCATCHER_CACHE_DIR_CACHE: cacheDir,
    VMCATCHER_CACHE_DIR_DOWNLOAD: path.join(dir, 'partial'),
    VMCATCHER_CACHE_DIR_EXPIRE: path.join(dir, 'expired'),
    VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
    VMCATCHER_EVENT_DC_TITLE: 'Image for AlmaLinux 9 [AlmaLinux/9/KVM]',
    VMCATCHER_EVENT_HV_URI: 'https://appliance-repo.example.org/alma9.vmdk',
    VMCATCHER_EVENT_HV_SIZE: String((await stat(cached)).size),
    VMCATCHER_EVENT_HV_VERSION: '9.3-1',
    VMCATCHER_EVENT_HV_FORMAT: 'VMDK',
    VMCATCHER_EVENT_SL_ARCH: 'x86_64',
    VMCATCHER_EVENT_SL_CHECKSUM_SHA512: await sha512sum(cached),
    VMCATCHER_EVENT_SL_OS: 'Linux',
    VMCATCHER_EVENT_SL_OSNAME: 'AlmaLinux',
    VMCATCHER_EVENT_SL_OSVERSION: '9',
    VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
    VMCATCHER_EVENT_AD_MPURI: `https://appdb.example.org/store/vo/image/${imageId}:7/`,
    VMCATCHER_EVENT_VO: 'vo.example.org',
  };
  ours = client(openstack.demo);
  theirs = client(openstack.other);
  service = await startService(['run', '--conf', conf], { env, readyPattern: /consuming/ });
}, 420_000);

afterAll(async () => {
  await service?.stop();
  await server?.close();
  await agent.close();
  await openstack?.stop();
  await deleteTopology(topology);
  if (dir) await rm(dir, { recursive: true, force: true });
  // The file's whole run time, set-up included (the suite must stay within its budget).
  console.log(`glance e2e: ${Math.round(performance.now() - started) / 1000} s`);
});

const waitFor = async <T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${service.log().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
};

const workFiles = async () => (await execa('find', [`${dir}/work`, '-type', 'f']).catch(() => ({ stdout: '' }))).stdout;

test('register-now uploads a qcow2 served over HTTP to Glance as the same qcow2, once; running it again adds nothing', async () => {
  const url = server.at('/images/centos-9.qcow2');
  const event = eventFromFlat(
    {
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'register-now',
      VMCATCHER_EVENT_DC_IDENTIFIER: 'centos-9.qcow2',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: qcow2Sha512,
    },
    'message',
  );
  const theirCopy = await lookAlike(event);

  const first = await runCli(
    ['register-now', '-conf', conf, '-url', url, '-osfamily', 'linux', '--sha512', qcow2Sha512],
    { env, timeoutMs: 180_000 },
  );
  expect(first.stderr).toContain('Sent the image to workflow image:glance-e2e:register-now:centos-9.qcow2:');
  expect(first.exitCode).toBe(0);
  const imageIdShown = /^Registered image (\S+)/.exec(first.stdout)?.[1];

  const found = await ours.findOurImages(identityFilter(event));
  expect(found.map((i) => i.id)).toEqual([imageIdShown]);
  const [image] = found;
  // Uploaded as it was published: Glance holds exactly the qcow2's bytes, with no conversion to raw.
  expect(image).toMatchObject({
    status: 'active',
    disk_format: 'qcow2',
    container_format: 'bare',
    owner: openstack.demo.projectId,
    visibility: 'community',
    size: (await stat(qcow2)).size,
    os_hash_algo: 'sha512',
    os_hash_value: qcow2Sha512,
    os_type: 'linux',
    hw_disk_bus: 'virtio',
    [IDENTITY_PROPERTIES.revision]: `sha512-${qcow2Sha512.slice(0, 32)}`,
  });
  expect(await workFiles()).toBe('');

  const second = await runCli(['register-now', '-conf', conf, '-url', url, '--sha512', qcow2Sha512], {
    env,
    timeoutMs: 180_000,
  });
  expect(second.exitCode).toBe(0);
  expect(second.stdout).toMatch(/^Image \S+ \(.*\) is already registered; nothing added/);
  expect((await ours.findOurImages(identityFilter(event))).map((i) => [i.id, i.updated_at])).toEqual([
    [image.id, image.updated_at],
  ]);
  await untouched(theirCopy);
});

test("a vmcatcher event through RabbitMQ registers one raw image in Glance (twice sent); its expiry deactivates it and makes it private; the other tenant's look-alike stays as it was", async () => {
  const event = eventFromFlat(vmcatcherEnv, 'message');
  const theirCopy = await lookAlike(event);
  const hookLine = ['-v', 'enqueue-from-env', '-conf', conf];
  const available = {
    ...env,
    ...vmcatcherEnv,
    VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
    VMCATCHER_EVENT_FILENAME: imageId,
  };
  expect((await runCli(hookLine, { env: available })).exitCode).toBe(0);
  // vmcatcher may run the hook again for the same image: still one image.
  expect((await runCli(hookLine, { env: available })).exitCode).toBe(0);

  // Active, then given the site's visibility: the registration's last step.
  const image = await waitFor('the image to be registered', async () => {
    const found = await ours.findOurImages(identityFilter(event));
    return found.length > 0 && found.every((i) => i.status === 'active' && i.visibility === 'community')
      ? found
      : undefined;
  });
  expect(image).toHaveLength(1);
  // A vmdk is not what Glance takes here: converted to raw (its virtual size, 8 MiB).
  expect(image[0]).toMatchObject({
    disk_format: 'raw',
    size: 8 * 1024 * 1024,
    owner: openstack.demo.projectId,
    os_distro: 'almalinux',
    architecture: 'x86_64',
  });
  expect(image[0].vmcatcher_event_ad_mpuri).toBe(vmcatcherEnv.VMCATCHER_EVENT_AD_MPURI);

  // What a subscription's sync sees of the list: our image only, live, with its full checksum, its title and version.
  const { config } = await loadConfig({ file: conf, env: {} });
  const target = glanceTarget({ config, logger: pino({ level: 'silent' }) }, config.cloud as GlanceConfig);
  const inventory = () => target.inventory({ listId, options: {} });
  const revision = `sha512-${vmcatcherEnv.VMCATCHER_EVENT_SL_CHECKSUM_SHA512.slice(0, 32)}`;
  const checksumSha512 = vmcatcherEnv.VMCATCHER_EVENT_SL_CHECKSUM_SHA512;
  const named = { title: vmcatcherEnv.VMCATCHER_EVENT_DC_TITLE, version: vmcatcherEnv.VMCATCHER_EVENT_HV_VERSION };
  expect(await inventory()).toEqual({
    expireAction: 'make-private',
    images: [{ cloudImageId: image[0].id, imageId, revision, checksumSha512, isPublic: true, ...named }],
  });

  const expire = {
    ...env,
    ...vmcatcherEnv,
    VMCATCHER_EVENT_TYPE: 'ExpirePostfix',
    VMCATCHER_EVENT_FILENAME: `${imageId}.2026-11-30_12-00-00`,
  };
  expect((await runCli(hookLine, { env: expire })).exitCode).toBe(0);
  await waitFor('the image to be deactivated and made private', async () => {
    const now = await ours.getImage(image[0].id);
    return now?.status === 'deactivated' && now.visibility === 'private' ? now : undefined;
  });
  expect((await ours.findOurImages(identityFilter(event, true))).map((i) => i.id)).toEqual([image[0].id]);
  expect(await inventory()).toEqual({
    expireAction: 'make-private',
    images: [{ cloudImageId: image[0].id, imageId, revision, checksumSha512, isPublic: false, ...named }],
  });
  await untouched(theirCopy);
  expect(await workFiles()).toBe('');
});
