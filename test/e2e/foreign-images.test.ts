import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { runCli } from '../support/cli.js';
import { type FakeImage } from '../support/fake-cloud.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { Site } from '../support/site.js';

/**
 * Other tenants' images, end to end: the identity properties of our images are public and derivable, so
 * another tenant can put them on a public image of theirs. Through the whole product path
 * (vmcatcher's hook line → RabbitMQ → `run` → kamaki), registration must not take their image
 * for ours, and expiry must leave it alone.
 */
describe("another tenant's image carrying our identity, end to end", () => {
  const imageId = '5d1a2f5e-8a55-4a57-9d7e-2f0c1b7e0a11';
  const listId = `list-${Math.random().toString(16).slice(2, 10)}`;
  let site: Site;
  let vmcatcherEnv: Record<string, string>;
  let sha512: string;

  beforeAll(async () => {
    site = await Site.create('foreign', 'site');
    const cacheDir = path.join(site.dir, 'cache');
    await mkdir(cacheDir);
    const cached = path.join(cacheDir, imageId);
    await execa('qemu-img', ['create', '-f', 'raw', cached, '8M']);
    await writeLinuxMbr(cached, 8 * 1024 * 1024);
    sha512 = (await execa('sha512sum', [cached])).stdout.split(' ')[0];

    vmcatcherEnv = {
      VMCATCHER_EVENT_UUID_SESSION: 'a3c2f3b4-0000-11ee-8000-000000000002',
      VMCATCHER_CACHE_DIR_CACHE: cacheDir,
      VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
      VMCATCHER_EVENT_DC_TITLE: 'Debian 12',
      VMCATCHER_EVENT_HV_URI: 'https://appliance-repo.example.org/debian12.raw',
      VMCATCHER_EVENT_HV_VERSION: '12.1',
      VMCATCHER_EVENT_HV_FORMAT: 'raw',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: sha512,
      VMCATCHER_EVENT_SL_OS: 'Linux',
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
    };
    await site.start({ command: 'run', conf: `security { vmcatcherCacheFolders = ["${cacheDir}"] }` });
  });

  afterAll(() => site?.close());

  const images = () => site.images();

  test('registration makes our own image instead of reusing theirs; expiry makes ours private and leaves theirs public', async () => {
    // The same identity properties our registration would carry, on someone else's public image.
    const theirs = await site.cloud.seedForeignImage({
      name: 'Debian 12 12.1',
      properties: {
        VMCATCHER_IL_DC_IDENTIFIER: listId,
        VMCATCHER_DC_IDENTIFIER: imageId,
        VMCATCHER_REVISION: `sha512-${sha512.slice(0, 32)}`,
      },
    });
    const account = await site.cloud.account();
    expect(theirs.owner).not.toBe(account);
    const ours = (all: FakeImage[]) => all.filter((i) => i.owner === account);

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
    await site.waitFor('our image to be registered', async () => ours(await images()).length === 1);
    const [mine] = ours(await images());
    expect(mine.id).not.toBe(theirs.id);
    expect(mine).toMatchObject({
      is_public: true,
      properties: { VMCATCHER_DC_IDENTIFIER: imageId, VMCATCHER_REVISION: `sha512-${sha512.slice(0, 32)}` },
    });
    expect(mine.location).toMatch(new RegExp(`^pithos://${account}/images/`));
    expect(site.service!.log()).toContain('images of other accounts carry this identity: ignored');

    const expire = await runCli(hookLine, {
      env: {
        ...site.env,
        ...vmcatcherEnv,
        VMCATCHER_EVENT_TYPE: 'ExpirePostfix',
        VMCATCHER_EVENT_FILENAME: `${imageId}.2026-11-30_12-00-00`,
      },
    });
    expect(expire.exitCode).toBe(0);
    await site.waitFor('our image to be made private', async () => ours(await images())[0]?.is_public === false);
    const after = await images();
    expect(after).toHaveLength(2);
    expect(after.find((i) => i.id === theirs.id)).toMatchObject({
      owner: theirs.owner,
      is_public: true,
      status: 'AVAILABLE',
      deleted_at: '',
    });
    // No kamaki command ever named their image.
    expect((await site.cloud.state()).invocations.filter((i) => i.argv.includes(theirs.id))).toEqual([]);
  });
});
