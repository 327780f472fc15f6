import { copyFile, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { convertToRaw } from '../../activities/convert.js';
import { filesystemSpace } from '../../activities/disk.js';
import { OWNER_FILE, createWorkDir } from '../../activities/workspace.js';
import { workerActivityEnv } from '../support/activities.js';
import { parseConfig } from '../../core/config.js';
import { makeRawDisk, makeTar, qemuConvert, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

const MiB = 1024 * 1024;

/**
 * Convert checks the free space of the work folder (less the disk reserve) before a
 * step writes, fails with OutOfSpaceError / DiskTooSmallError naming the bytes needed and free,
 * stops a step whose output outgrows its estimate before the disk fills up, and deletes its
 * partial output. The size limits default to what the filesystem can hold.
 */
describe('convert and the disk', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let work: string;

  beforeAll(async () => {
    root = await tempDir('snf-space-');
    src = path.join(root.dir, 'src');
    work = path.join(root.dir, 'work');
    await execa('mkdir', ['-p', src, work]);
    await makeRawDisk(path.join(src, 'disk.img'), 64);
    await qemuConvert(path.join(src, 'disk.img'), 'raw', path.join(src, 'disk.qcow2'), 'qcow2');
    await makeTar(path.join(src, 'disk.tar'), src, ['disk.img']);
    // 1 GiB of zeros whose gzip trailer claims 0 bytes: the estimate is short by 1 GiB.
    await execa('sh', ['-c', `head -c ${1024 * MiB} /dev/zero | gzip -1 > ${path.join(src, 'liar.img.gz')}`]);
    const fh = await open(path.join(src, 'liar.img.gz'), 'r+');
    const { size } = await fh.stat();
    await fh.write(Buffer.alloc(4), 0, 4, size - 4);
    await fh.close();
  }, 120_000);

  afterAll(async () => {
    await root?.cleanup();
  });

  async function run(
    file: string,
    format: string,
    worker: Record<string, unknown>,
    security: Record<string, unknown> = {},
    diskWatchMs?: number,
    workingFolder = work,
  ) {
    const config = parseConfig({ worker: { workingFolder, diskReservePercent: 0, ...worker }, security }, 'test');
    const workflowId = `space ${file} ${Math.random()}`;
    const workDir = await createWorkDir(config, workflowId);
    const input = path.join(workDir, file);
    await copyFile(path.join(src, file), input);
    const convert = () =>
      workerActivityEnv().run(() =>
        convertToRaw({ config, logger: quietLogger, diskWatchMs }, { workflowId, path: input, workDir, format }),
      );
    const left = async () => (await readdir(workDir)).filter((f) => f !== OWNER_FILE);
    return { convert, left, input };
  }

  /** A reserve that leaves a filesystem of `capacity` usable bytes: deterministic whatever others write. */
  const capacityOf = async (capacity: number) => ({ diskReserveBytes: (await filesystemSpace(work)).total - capacity });

  test.each([
    [
      'qemu-img convert of a qcow2 whose 64 MiB raw cannot fit',
      'disk.qcow2',
      'qcow2',
      /qemu-img convert disk\.qcow2 from qcow2 to raw needs 67108864 bytes, but the filesystem .* holds at most 4194304/,
    ],
    [
      'unpacking a 64 MiB tar member that cannot fit',
      'disk.tar',
      'tar',
      /unpack disk\.img from tar disk\.tar needs 67108864 bytes, but the filesystem .* holds at most 4194304/,
    ],
  ])('%s: DiskTooSmallError before anything is written', async (_name, file, format, expected) => {
    const { convert, left } = await run(file, format, await capacityOf(4 * MiB), {
      maxVirtualBytes: 1024 ** 4,
      maxUnpackedBytes: 1024 ** 4,
    });
    await expect(convert()).rejects.toMatchObject({
      type: 'DiskTooSmallError',
      nonRetryable: true,
      message: expect.stringMatching(expected),
    });
    expect(await left()).toEqual([file]);
  });

  test('unset size limits are what the filesystem can hold', async () => {
    const { convert, left } = await run('disk.qcow2', 'qcow2', await capacityOf(4 * MiB));
    await expect(convert()).rejects.toMatchObject({
      type: 'ImageIntegrityError',
      message: expect.stringMatching(
        /virtual size of 67108864 bytes, more than the limit of 4194304 \(security\.maxVirtualBytes, by default what the working folder's filesystem can hold\)/,
      ),
    });
    expect(await left()).toEqual(['disk.qcow2']);
  });

  test('explicit limits still apply', async () => {
    const { convert } = await run('disk.qcow2', 'qcow2', {}, { maxVirtualBytes: 32 * MiB });
    await expect(convert()).rejects.toMatchObject({
      type: 'ImageIntegrityError',
      message: expect.stringMatching(/more than the limit of 33554432 \(security\.maxVirtualBytes\)$/),
    });
  });

  test('a gzip whose output outgrows its estimate is stopped before the free space falls into the reserve, and its output deleted', async () => {
    // A filesystem of its own (a 512 MiB tmpfs; mounting needs root, as CI has): the free space
    // it watches is this test's alone, whatever the test files running beside it write or delete.
    const small = path.join(root.dir, 'small');
    await execa('mkdir', ['-p', small]);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=512M', 'tmpfs', small]);
    try {
      // Leave 256 MiB above the reserve: the 1 GiB of zeros does not fit. The unpacked-size limit is
      // set far above: by default it is what the filesystem can hold above the reserve, the same
      // 256 MiB, and whichever of the two noticed first would fail the step. Here only the disk
      // watch may stop it.
      const { free } = await filesystemSpace(small);
      const { convert, left } = await run(
        'liar.img.gz',
        'gz',
        { diskReserveBytes: free - 256 * MiB },
        { maxUnpackedBytes: 1024 ** 4 },
        50,
        small,
      );
      await expect(convert()).rejects.toMatchObject({
        type: 'OutOfSpaceError',
        nonRetryable: true,
        message: expect.stringMatching(
          /not enough disk space in .* for gunzip liar\.img\.gz: .*stopped before the disk filled up/,
        ),
      });
      expect(await left()).toEqual(['liar.img.gz']);
    } finally {
      await execa('umount', [small]).catch(() => undefined);
    }
  });
});
