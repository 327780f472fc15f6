import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { runCli } from '../support/cli.js';
import { startImageServer, type ImageServer } from '../support/image-server.js';
import { makeRawDisk, qemuConvert, tempDir } from '../support/pipeline-fixtures.js';

describe('transform converts an image to a raw temporary file, as the original command did', () => {
  let server: ImageServer;
  let root: Awaited<ReturnType<typeof tempDir>>;
  let work: string;
  let disk: Buffer;

  beforeAll(async () => {
    server = await startImageServer();
    root = await tempDir('snf-transform-');
    work = path.join(root.dir, 'work');
    await makeRawDisk(path.join(root.dir, 'disk.img'), 4);
    await qemuConvert(path.join(root.dir, 'disk.img'), 'raw', path.join(root.dir, 'disk.qcow2'), 'qcow2');
    disk = await readFile(path.join(root.dir, 'disk.img'));
    server.route('/disk.qcow2', { body: await readFile(path.join(root.dir, 'disk.qcow2')) });
    server.route('/broken.vmdk.gz', {
      body: Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(4096)]),
    });
  });

  afterAll(async () => {
    await server.close();
    await root.cleanup();
  });

  test('the original spelling downloads a qcow2 and prints the message and the bare raw path', async () => {
    const url = server.at('/disk.qcow2');
    const result = await runCli(['-working-folder', work, 'transform', '-url', url]);
    expect(result.exitCode).toBe(0);
    const [message, file] = result.stdout.trim().split('\n');
    expect(message).toBe(`Transformed ${url} to ${file}. Do not forget to delete the temporary file.`);
    const raw = await readFile(file);
    expect(createHash('sha512').update(raw).digest('hex')).toBe(createHash('sha512').update(disk).digest('hex'));
    // The download itself is gone; only the raw file the user was told about remains.
    expect(await readdir(path.dirname(file))).toEqual([path.basename(file)]);
    await rm(path.dirname(file), { recursive: true });
  });

  test('a file: URL is converted without touching the original', async () => {
    const source = path.join(root.dir, 'local.qcow2');
    await writeFile(source, await readFile(path.join(root.dir, 'disk.qcow2')));
    const result = await runCli(['transform', '--url', `file://${source}`, '--working-folder', work]);
    expect(result.exitCode).toBe(0);
    const file = result.stdout.trim().split('\n')[1];
    expect((await readFile(file)).equals(disk)).toBe(true);
    expect(await readFile(source)).toBeTruthy();
    await rm(path.dirname(file), { recursive: true });
  });

  test.each([
    ['a 404', '/missing.qcow2', /snf-vmcatcher: GET .*HTTP 404/],
    [
      'a corrupt gzip (conversion failure is not swallowed)',
      '/broken.vmdk.gz',
      /snf-vmcatcher: broken\.vmdk\.gz cannot be decompressed/,
    ],
  ])('%s fails with exit 1, one clear line, and leaves no temporary files', async (_name, p, expected) => {
    const before = await readdir(work).catch(() => []);
    const result = await runCli(['transform', '--url', server.at(p), '--working-folder', work]);
    expect(result.exitCode).toBe(1);
    expect(result.stdout).toBe('');
    expect(
      result.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('snf-vmcatcher:')),
    ).toEqual([expect.stringMatching(expected)]);
    expect(await readdir(work)).toEqual(before);
  });
});
