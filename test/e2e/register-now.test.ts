import path from 'node:path';
import { execa } from 'execa';
import { runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { Site } from '../support/site.js';

/**
 * End to end: the real CLI, the real Temporal dev server, a real worker process, a
 * qcow2 made by qemu-img served over local HTTP; only kamaki and snf-mkimage are the fakes.
 */
describe('register-now end to end', () => {
  let site: Site;
  let dir: string;
  let server: TestServer;
  let sha512: string;

  beforeAll(async () => {
    site = await Site.create('e2e');
    dir = site.dir;
    const raw = path.join(dir, 'disk.raw');
    const qcow2 = path.join(dir, 'debian-12.qcow2');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '16M']);
    await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=4', 'seek=2', 'conv=notrunc']);
    await writeLinuxMbr(raw, 16 * 1024 * 1024);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    sha512 = (await execa('sha512sum', [qcow2])).stdout.split(' ')[0];
    server = await startTestServer({ routes: { '/images/debian-12.qcow2': { file: qcow2 } } });

    await site.start({ command: 'worker', synnefo: 'public = true' });
  });

  afterAll(async () => {
    await site?.close();
    await server?.close();
  });

  const state = () => site.cloud.state();

  test('registers a qcow2 served over HTTP as one image with the expected properties; running it again adds nothing', async () => {
    const url = server.at('/images/debian-12.qcow2');
    const first = await runCli(
      [
        'register-now',
        '-conf',
        site.conf,
        '-url',
        url,
        '-kamaki-cloud',
        'e2e',
        '-osfamily',
        'linux',
        '-users',
        'root',
        '--sha512',
        sha512,
      ],
      {
        env: site.env,
        timeoutMs: 120_000,
      },
    );
    expect(first.stderr).toContain('Sent the image to workflow image:synnefo-e2e:register-now:debian-12.qcow2:');
    expect(first.stderr).toContain('the registration is register:synnefo-e2e:register-now:debian-12.qcow2:');
    expect(first.stderr).toContain('Web UI: http://localhost:8233/namespaces/default/workflows/');
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toMatch(/^Registered image \S+/);

    const after1 = await state();
    expect(after1.images).toHaveLength(1);
    const image = after1.images[0];
    expect(image.is_public).toBe(true);
    expect(image.properties).toMatchObject({
      OSFAMILY: 'linux',
      USERS: 'root',
      VMCATCHER_DC_IDENTIFIER: 'debian-12.qcow2',
      VMCATCHER_IL_DC_IDENTIFIER: 'register-now',
      VMCATCHER_REVISION: `sha512-${sha512.slice(0, 32)}`,
    });
    expect(Object.keys(image.properties).length).toBeLessThanOrEqual(32);
    // The cloud starts without the "images" container and kamaki's upload does not
    // create it: the worker did, before uploading into it.
    const account = await site.cloud.account();
    expect(image.owner).toBe(account);
    expect(Object.keys(after1.containers)).toEqual([`${account}/images`]);
    const kamakiCalls = after1.invocations.filter((i) => i.tool === 'kamaki').map((i) => `${i.argv[0]} ${i.argv[1]}`);
    expect(kamakiCalls.indexOf('container create')).toBeGreaterThanOrEqual(0);
    expect(kamakiCalls.indexOf('container create')).toBeLessThan(kamakiCalls.indexOf('file upload'));
    const uploads1 = after1.invocations.filter((i) => i.tool === 'kamaki' && i.argv.includes('upload')).length;
    expect(uploads1).toBe(1);
    // The workflow cleaned up after itself.
    const leftovers = await execa('find', [`${dir}/work`, '-type', 'f']).catch(() => ({ stdout: '' }));
    expect(leftovers.stdout).toBe('');

    const second = await runCli(
      ['register-now', '-conf', site.conf, '-url', url, '-kamaki-cloud', 'e2e', '--sha512', sha512],
      { env: site.env, timeoutMs: 120_000 },
    );
    expect(second.exitCode).toBe(0);
    expect(second.stdout).toMatch(/^Image \S+ \(.*\) is already registered; nothing added/);
    const after2 = await state();
    expect(after2.images).toHaveLength(1);
    expect(after2.invocations.filter((i) => i.tool === 'kamaki' && i.argv.includes('upload')).length).toBe(uploads1);
  });

  test('a checksum mismatch fails the registration at once, non-zero, naming the problem, registering nothing', async () => {
    const url = server.at('/images/debian-12.qcow2');
    const wrong = 'a'.repeat(128);
    const before = (await state()).images.length;
    const result = await runCli(
      ['register-now', '-conf', site.conf, '-url', url, '-kamaki-cloud', 'e2e', '--sha512', wrong],
      { env: site.env, timeoutMs: 120_000 },
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/Registration failed: .*sha512/i);
    expect((await state()).images.length).toBe(before);
    // The failed workflow left no temporary file behind.
    const leftovers = await execa('find', [`${dir}/work`, '-mindepth', '1']).catch(() => ({ stdout: '' }));
    expect(leftovers.stdout).toBe('');
  });
});
