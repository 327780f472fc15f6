import { access, open, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { checkMembers, listTarArchive, unsafeMemberReason, type ArchiveMember } from '../../activities/archive.js';
import { createHostActivities } from '../../activities/host.js';
import { asRunByWorker } from '../support/activities.js';
import { OWNER_FILE, createWorkDir } from '../../activities/workspace.js';
import { pipelineConfig, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

/** A tar built byte by byte, so hostile members (../, absolute, links out) can be written. */
function tarOf(
  members: Array<{ name: string; type?: '0' | '2' | '1' | '5' | '3'; link?: string; data?: Buffer }>,
): Buffer {
  const blocks: Buffer[] = [];
  for (const m of members) {
    const data = m.data ?? Buffer.alloc(0);
    const h = Buffer.alloc(512);
    h.write(m.name, 0, 100, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148);
    h.write(m.type ?? '0', 156);
    if (m.link) h.write(m.link, 157, 100, 'utf8');
    h.write('ustar\x0000', 257, 'latin1');
    let sum = 0;
    for (const byte of h) sum += byte;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const file = (p: string, size = 10): ArchiveMember => ({ path: p, size, kind: 'file' });

describe('unsafeMemberReason refuses archive members that would leave the work folder', () => {
  test.each<[string, ArchiveMember, RegExp | undefined]>([
    ['a plain file', file('disk.vmdk'), undefined],
    ['a file in a folder', file('images/disk.vmdk'), undefined],
    ['../evil', file('../evil'), /leaves the folder/],
    ['a/../../evil', file('a/../../evil'), /leaves the folder/],
    ['an absolute path', file('/etc/cron.d/evil'), /absolute path/],
    ['a Windows absolute path', file('C:\\evil'), /absolute path/],
    [
      'a symlink to an absolute path',
      { path: 'disk.img', size: 0, kind: 'link', linkTarget: '/etc/shadow' },
      /absolute/,
    ],
    ['a symlink climbing out', { path: 'a/disk.img', size: 0, kind: 'link', linkTarget: '../../secret' }, /outside/],
    ['a symlink staying inside', { path: 'a/disk.img', size: 0, kind: 'link', linkTarget: '../b/disk.img' }, undefined],
  ])('%s', (_name, member, expected) => {
    const reason = unsafeMemberReason(member);
    if (expected) expect(reason).toMatch(expected);
    else expect(reason).toBeUndefined();
  });

  test('more entries than security.maxArchiveEntries are refused', () => {
    expect(() =>
      checkMembers('a.tar', [file('a'), file('b'), file('c')], { maxEntries: 2, maxUnpackedBytes: 1e9 }),
    ).toThrow(/3 entries.*limit of 2/);
  });

  test('more declared bytes than security.maxUnpackedBytes are refused', () => {
    expect(() =>
      checkMembers('a.tar', [file('a', 600), file('b', 600)], { maxEntries: 10, maxUnpackedBytes: 1000 }),
    ).toThrow(/1200 bytes.*limit of 1000/);
  });
});

describe('a tar listing stops at security.maxArchiveEntries while streaming', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  const ENTRIES = 200_000;
  let tar: string;

  beforeAll(async () => {
    root = await tempDir('snf-archive-entries-');
    tar = path.join(root.dir, 'many.tar');
    // 200,000 empty files (100 MiB of headers), written a batch at a time so the test holds none of
    // it: one header built by tarOf, copied with each name (same length) and its checksum adjusted.
    const template = tarOf([{ name: 'f0000000' }]).subarray(0, 512);
    const templateSum = parseInt(template.toString('latin1', 148, 154), 8);
    const nameSum = (name: string) => [...Buffer.from(name)].reduce((a, b) => a + b, 0);
    const out = await open(tar, 'w');
    try {
      for (let i = 0; i < ENTRIES; i += 10_000) {
        const batch = Buffer.alloc(10_000 * 512);
        for (let j = 0; j < 10_000; j++) {
          const name = `f${String(i + j).padStart(7, '0')}`;
          const h = batch.subarray(j * 512, (j + 1) * 512);
          template.copy(h);
          h.write(name, 0, 'latin1');
          const sum = templateSum - nameSum('f0000000') + nameSum(name);
          h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
        }
        await out.write(batch);
      }
      await out.write(Buffer.alloc(1024));
    } finally {
      await out.close();
    }
  });
  afterAll(async () => {
    await root.cleanup();
  });

  test('an archive of far more entries than the limit is refused early, reading a few MiB, and memory stays flat', async () => {
    const { size } = await stat(tar);
    expect(size).toBe(ENTRIES * 512 + 1024);
    const baseline = process.memoryUsage().heapUsed;
    let peak = baseline;
    let read = 0;
    const error = await listTarArchive(tar, {
      maxEntries: 64,
      onBytes: (bytes) => {
        read = bytes;
        peak = Math.max(peak, process.memoryUsage().heapUsed);
      },
    }).catch((e: unknown) => e as Error);
    peak = Math.max(peak, process.memoryUsage().heapUsed);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toBe(
      'many.tar has more entries than the limit of 64 (security.maxArchiveEntries); refused without reading further',
    );
    // The stream stopped within its first reads (4 MiB each), not at the end of the 100 MiB.
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThanOrEqual(16 * 1024 * 1024);
    // Loosely: listing all 200,000 entries grew the heap by some 23 MiB here; stopping at the 65th, by under 1 MiB.
    expect(peak - baseline).toBeLessThan(8 * 1024 * 1024);
  });

  test('within the limit the whole listing is read', async () => {
    const small = path.join(root.dir, 'small.tar');
    await writeFile(small, tarOf([{ name: 'disk.img', data: Buffer.alloc(1000) }, { name: 'notes.txt' }]));
    const listing = await listTarArchive(small, { maxEntries: 2 });
    expect(listing.members.map((m) => m.path)).toEqual(['disk.img', 'notes.txt']);
    await expect(listTarArchive(small, { maxEntries: 1 })).rejects.toThrow(/more entries than the limit of 1 /);
  });
});

describe('convertToRaw refuses hostile archives before writing anything', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    root = await tempDir('snf-archive-');
  });
  afterAll(async () => {
    await root.cleanup();
  });

  const disk = Buffer.alloc(4096, 1);
  test.each<[string, Buffer, Record<string, unknown>, RegExp]>([
    ['a ../evil member', tarOf([{ name: '../evil', data: disk }]), {}, /leaves the folder/],
    ['an absolute member', tarOf([{ name: '/tmp/evil', data: disk }]), {}, /absolute path/],
    [
      'a symlink pointing out',
      tarOf([{ name: 'disk.img', type: '2', link: '/etc/shadow' }]),
      {},
      /points to absolute path/,
    ],
    [
      'a hard link pointing out',
      tarOf([{ name: 'disk.img', type: '1', link: '../../etc/shadow' }]),
      {},
      /outside the archive/,
    ],
    ['a device node', tarOf([{ name: 'disk.img', type: '3' }]), {}, /CharacterDevice/],
    [
      'too many entries',
      tarOf(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, data: disk }))),
      { maxArchiveEntries: 4 },
      /5 entries/,
    ],
    [
      'too many unpacked bytes',
      tarOf([{ name: 'disk.img', data: disk }]),
      { maxUnpackedBytes: 1000 },
      /unpack to 4096 bytes/,
    ],
    [
      'a gzip bomb beyond maxUnpackedBytes',
      gzipSync(Buffer.alloc(1024 * 1024)),
      { maxUnpackedBytes: 64 * 1024 },
      /more than 65536 bytes/,
    ],
  ])('%s', async (name, bytes, security, expected) => {
    const config = pipelineConfig(root.dir, security);
    const { convertToRaw, inspectImage } = asRunByWorker(createHostActivities({ config, logger: quietLogger }));
    const workDir = await createWorkDir(config, name);
    const input = path.join(workDir, 'upload.bin');
    await writeFile(input, bytes);
    const { format } = await inspectImage({ path: input });
    await expect(convertToRaw({ workflowId: name, path: input, workDir, format })).rejects.toMatchObject({
      nonRetryable: true,
      message: expected,
    });
    expect((await readdir(workDir)).filter((f) => f !== OWNER_FILE)).toEqual(['upload.bin']);
    await expect(access(path.join(root.dir, 'evil'))).rejects.toThrow();
  });
});
