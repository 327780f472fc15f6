import { copyFile, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { createHostActivities } from '../../activities/host.js';
import { asRunByWorker } from '../support/activities.js';
import { detectFormat, readSignatureBytes } from '../../activities/inspect.js';
import { OWNER_FILE, createWorkDir } from '../../activities/workspace.js';
import {
  makeRawDisk,
  makeTar,
  ovfFor,
  pipelineConfig,
  qemuConvert,
  quietLogger,
  tempDir,
} from '../support/pipeline-fixtures.js';

/**
 * Every format and wrapper the pipeline accepts, made by qemu-img (and gzip, bzip2, xz, zip,
 * tar) from small raw disks with random content; each must come out byte-identical to what
 * `qemu-img convert -O raw` makes of the disk inside.
 */
interface Case {
  name: string;
  /** The file handed to the pipeline (in the source folder). */
  input: string;
  /** The disk image inside, and its format: the reference for the expected raw bytes. */
  inner: { file: string; format: string };
  detected: string;
  /** Wrapping steps expected before qemu-img (0 for a bare disk image). */
  unwraps: number;
}

const CASES: Case[] = [
  {
    name: 'raw with a .img name',
    input: 'disk.img',
    inner: { file: 'disk.img', format: 'raw' },
    detected: 'raw',
    unwraps: 0,
  },
  { name: 'qcow2', input: 'disk.qcow2', inner: { file: 'disk.qcow2', format: 'qcow2' }, detected: 'qcow2', unwraps: 0 },
  {
    name: 'vmdk monolithicSparse',
    input: 'disk.vmdk',
    inner: { file: 'disk.vmdk', format: 'vmdk' },
    detected: 'vmdk',
    unwraps: 0,
  },
  {
    name: 'vmdk streamOptimized',
    input: 'stream.vmdk',
    inner: { file: 'stream.vmdk', format: 'vmdk' },
    detected: 'vmdk',
    unwraps: 0,
  },
  { name: 'vdi', input: 'disk.vdi', inner: { file: 'disk.vdi', format: 'vdi' }, detected: 'vdi', unwraps: 0 },
  {
    name: 'vpc (dynamic VHD)',
    input: 'disk.vhd',
    inner: { file: 'disk.vhd', format: 'vpc' },
    detected: 'vpc',
    unwraps: 0,
  },
  {
    name: 'vpc (fixed VHD, footer only)',
    input: 'fixed.vhd',
    inner: { file: 'fixed.vhd', format: 'vpc' },
    detected: 'vpc',
    unwraps: 0,
  },
  { name: 'vhdx', input: 'disk.vhdx', inner: { file: 'disk.vhdx', format: 'vhdx' }, detected: 'vhdx', unwraps: 0 },
  { name: 'qed', input: 'disk.qed', inner: { file: 'disk.qed', format: 'qed' }, detected: 'qed', unwraps: 0 },
  {
    name: 'vmdk in gzip (.vmdk.gz)',
    input: 'disk.vmdk.gz',
    inner: { file: 'disk.vmdk', format: 'vmdk' },
    detected: 'gz',
    unwraps: 1,
  },
  {
    name: 'qcow2 in bzip2',
    input: 'disk.qcow2.bz2',
    inner: { file: 'disk.qcow2', format: 'qcow2' },
    detected: 'bz2',
    unwraps: 1,
  },
  {
    name: 'raw in xz (.img.xz)',
    input: 'disk.img.xz',
    inner: { file: 'disk.img', format: 'raw' },
    detected: 'xz',
    unwraps: 1,
  },
  { name: 'vdi in zip', input: 'disk.zip', inner: { file: 'disk.vdi', format: 'vdi' }, detected: 'zip', unwraps: 1 },
  {
    name: 'qcow2 in tar.gz',
    input: 'disk.tar.gz',
    inner: { file: 'disk.qcow2', format: 'qcow2' },
    detected: 'gz',
    unwraps: 2,
  },
  {
    name: 'OVA with one streamOptimized vmdk',
    input: 'one.ova',
    inner: { file: 'stream.vmdk', format: 'vmdk' },
    detected: 'ova',
    unwraps: 1,
  },
  {
    name: 'OVA with two disks: the OVF boot disk, not the first in the archive',
    input: 'two.ova',
    inner: { file: 'boot.vmdk', format: 'vmdk' },
    detected: 'ova',
    unwraps: 1,
  },
  {
    name: 'misnamed: a qcow2 called .raw',
    input: 'liar.raw',
    inner: { file: 'disk.qcow2', format: 'qcow2' },
    detected: 'qcow2',
    unwraps: 0,
  },
];

describe('convertToRaw turns every supported format and wrapper into the raw disk qemu-img makes', () => {
  let root: { dir: string; cleanup: () => Promise<void> };
  let src: string;
  let work: string;
  let activities: ReturnType<typeof createHostActivities>;

  beforeAll(async () => {
    root = await tempDir('snf-convert-');
    src = path.join(root.dir, 'src');
    work = path.join(root.dir, 'work');
    await execa('mkdir', ['-p', src, work]);
    activities = asRunByWorker(createHostActivities({ config: pipelineConfig(work), logger: quietLogger }));
    const at = (f: string) => path.join(src, f);
    await makeRawDisk(at('disk.img'), 8);
    await makeRawDisk(at('other.img'), 8);
    await qemuConvert(at('disk.img'), 'raw', at('disk.qcow2'), 'qcow2');
    await qemuConvert(at('disk.img'), 'raw', at('disk.vmdk'), 'vmdk');
    await qemuConvert(at('disk.img'), 'raw', at('stream.vmdk'), 'vmdk', ['-o', 'subformat=streamOptimized']);
    await qemuConvert(at('disk.img'), 'raw', at('disk.vdi'), 'vdi');
    await qemuConvert(at('disk.img'), 'raw', at('disk.vhd'), 'vpc');
    await qemuConvert(at('disk.img'), 'raw', at('fixed.vhd'), 'vpc', ['-o', 'subformat=fixed']);
    await qemuConvert(at('disk.img'), 'raw', at('disk.vhdx'), 'vhdx');
    await qemuConvert(at('disk.img'), 'raw', at('disk.qed'), 'qed');
    await qemuConvert(at('disk.img'), 'raw', at('boot.vmdk'), 'vmdk', ['-o', 'subformat=streamOptimized']);
    await qemuConvert(at('other.img'), 'raw', at('data.vmdk'), 'vmdk', ['-o', 'subformat=streamOptimized']);
    await copyFile(at('disk.qcow2'), at('liar.raw'));
    await execa(
      'sh',
      [
        '-c',
        'gzip -c disk.vmdk > disk.vmdk.gz && bzip2 -c disk.qcow2 > disk.qcow2.bz2 && xz -T1 -0 -c disk.img > disk.img.xz',
      ],
      { cwd: src },
    );
    await execa('zip', ['-q', 'disk.zip', 'disk.vdi'], { cwd: src });
    await makeTar(at('disk.tar.gz'), src, ['disk.qcow2'], { gzip: true });
    await writeFile(at('one.ovf'), ovfFor([{ href: 'stream.vmdk', address: 0 }]));
    await makeTar(at('one.ova'), src, ['one.ovf', 'stream.vmdk']);
    // data.vmdk comes first in the archive and in References; the hardware section boots boot.vmdk.
    await writeFile(
      at('two.ovf'),
      ovfFor([
        { href: 'data.vmdk', address: 1 },
        { href: 'boot.vmdk', address: 0 },
      ]),
    );
    await makeTar(at('two.ova'), src, ['two.ovf', 'data.vmdk', 'boot.vmdk']);
  });

  afterAll(async () => {
    await root?.cleanup();
  });

  test.each(CASES)('$name', async (c) => {
    const workflowId = `convert ${c.name}`;
    const workDir = await createWorkDir(pipelineConfig(work), workflowId);
    const input = path.join(workDir, c.input);
    await copyFile(path.join(src, c.input), input);

    const info = await activities.inspectImage({ path: input, fileName: c.input });
    expect(info.format).toBe(c.detected);

    const raw = await activities.convertToRaw({ workflowId, path: input, workDir, format: info.format });

    const expectedFile = path.join(root.dir, `expected-${c.inner.file}.raw`);
    await qemuConvert(path.join(src, c.inner.file), c.inner.format, expectedFile, 'raw');
    const [got, expected] = await Promise.all([readFile(raw.path), readFile(expectedFile)]);
    expect(got.length).toBe(expected.length);
    expect(got.equals(expected)).toBe(true);
    expect(raw.virtualSize).toBe(expected.length);
    expect(raw.bytes).toBe((await stat(raw.path)).size);
    expect(raw.steps.filter((s) => !s.startsWith('qemu-img')).length).toBe(c.unwraps);
    expect(path.dirname(raw.path)).toBe(workDir);
    // Intermediates are gone: only the input and the raw result remain.
    const left = (await readdir(workDir)).filter((f) => f !== OWNER_FILE).sort();
    expect(left).toEqual([...new Set([c.input, path.basename(raw.path)])].sort());
  });

  // How fast it is, is measured by `npm run bench` (detect); here, that it reads only the ends of the file.
  test('a 20 GiB sparse raw image is detected from a few KiB at its two ends, not by reading it', async () => {
    const big = path.join(root.dir, 'big.img');
    await execa('qemu-img', ['create', '-q', '-f', 'raw', big, '20G']);
    const { header, tail, size } = await readSignatureBytes(big);
    expect(size).toBe(20 * 1024 ** 3);
    expect(header.length + tail.length).toBeLessThanOrEqual(1024 * 1024);
    expect(detectFormat(header, { tail, fileName: 'big.img' }).format).toBe('raw');
  });

  test('an ISO 9660 image is detected as iso and refused by convert with a reason', async () => {
    const iso = path.join(root.dir, 'cd.iso');
    const buf = Buffer.alloc(64 * 1024);
    buf.write('\x01CD001\x01', 0x8000, 'latin1');
    await writeFile(iso, buf);
    const info = await activities.inspectImage({ path: iso });
    expect(info).toMatchObject({ format: 'iso', detectedBy: 'content' });
    await expect(
      activities.convertToRaw({
        workflowId: 'iso',
        path: iso,
        workDir: await createWorkDir(pipelineConfig(work), 'iso'),
        format: 'iso',
      }),
    ).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringContaining('ISO 9660'),
    });
  });
});
