import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { runCli } from '../support/cli.js';
import { toStreamOptimizedVmdk, writeLinuxMbr } from '../support/disk-images.js';
import { Site } from '../support/site.js';

/**
 * The whole product path, as a site runs it: vmcatcher's hook line (`enqueue-from-env` with the
 * event in its environment) → RabbitMQ → `run` (bridge + worker) → registered image; then the
 * image's expiry, through the same path, makes it private.
 */
describe('a vmcatcher cache event, end to end', () => {
  const imageId = '24910a01-d1ac-49be-b253-7746ed8f0dc0';
  const listId = `list-${Math.random().toString(16).slice(2, 10)}`;
  let site: Site;
  let vmcatcherEnv: Record<string, string>;

  beforeAll(async () => {
    site = await Site.create('hook', 'site');
    const dir = site.dir;
    const cacheDir = path.join(dir, 'cache');
    await mkdir(cacheDir);
    // vmcatcher names the cached file after the image UUID, with no extension.
    const raw = path.join(dir, 'disk.raw');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    await toStreamOptimizedVmdk(raw, path.join(cacheDir, imageId));
    const cached = path.join(cacheDir, imageId);
    const sha512 = (await execa('sha512sum', [cached])).stdout.split(' ')[0];
    const size = (await execa('stat', ['-c', '%s', cached])).stdout.trim();

    vmcatcherEnv = {
      VMCATCHER_EVENT_UUID_SESSION: 'a3c2f3b4-0000-11ee-8000-000000000001',
      VMCATCHER_CACHE_DIR_CACHE: cacheDir,
      VMCATCHER_CACHE_DIR_DOWNLOAD: path.join(dir, 'partial'),
      VMCATCHER_CACHE_DIR_EXPIRE: path.join(dir, 'expired'),
      VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
      VMCATCHER_EVENT_DC_TITLE: 'Image for CentOS 7 [CentOS/7/KVM]',
      VMCATCHER_EVENT_DC_DESCRIPTION: 'A test appliance',
      VMCATCHER_EVENT_HV_URI: 'https://appliance-repo.example.org/centos7.vmdk',
      VMCATCHER_EVENT_HV_SIZE: size,
      VMCATCHER_EVENT_HV_VERSION: '7.2-1',
      VMCATCHER_EVENT_HV_HYPERVISOR: 'KVM',
      VMCATCHER_EVENT_HV_FORMAT: 'VMDK',
      VMCATCHER_EVENT_SL_ARCH: 'x86_64',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: sha512,
      VMCATCHER_EVENT_SL_OS: 'Linux',
      VMCATCHER_EVENT_SL_OSVERSION: '7',
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_AD_MPURI: `https://appdb.example.org/store/vo/image/${imageId}:42/`,
      VMCATCHER_EVENT_VO: 'fedcloud.egi.eu',
    };
    await site.start({ command: 'run', conf: `security { vmcatcherCacheFolders = ["${cacheDir}"] }` });
  });

  afterAll(() => site?.close());

  const images = () => site.images();

  test('AvailablePostfix registers the cached image once, with its provenance; ExpirePostfix makes it private', async () => {
    const hookLine = ['-v', 'enqueue-from-env', '-conf', site.conf];
    const available = await runCli(hookLine, {
      env: {
        ...site.env,
        ...vmcatcherEnv,
        VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
        VMCATCHER_EVENT_FILENAME: imageId,
      },
    });
    expect(available.exitCode).toBe(0);
    // vmcatcher may run the hook again for the same image (e.g. a re-run): still one image.
    const again = await runCli(hookLine, {
      env: {
        ...site.env,
        ...vmcatcherEnv,
        VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
        VMCATCHER_EVENT_FILENAME: imageId,
      },
    });
    expect(again.exitCode).toBe(0);

    await site.waitFor('the image to be registered', async () => (await images()).length === 1);
    const [image] = await images();
    expect(image.is_public).toBe(true);
    expect(image.properties).toMatchObject({
      VMCATCHER_IL_DC_IDENTIFIER: listId,
      VMCATCHER_DC_IDENTIFIER: imageId,
      OSFAMILY: 'linux',
      VMCATCHER_EVENT_AD_MPURI: vmcatcherEnv.VMCATCHER_EVENT_AD_MPURI,
    });

    const expire = await runCli(hookLine, {
      env: {
        ...site.env,
        ...vmcatcherEnv,
        VMCATCHER_EVENT_TYPE: 'ExpirePostfix',
        VMCATCHER_EVENT_FILENAME: `${imageId}.2026-11-26_12-00-00`,
      },
    });
    expect(expire.exitCode).toBe(0);
    await site.waitFor('the image to be made private', async () => (await images())[0]?.is_public === false);
    expect(await images()).toHaveLength(1);
  });
});
