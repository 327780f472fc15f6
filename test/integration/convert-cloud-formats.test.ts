import { copyFile, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { createHostActivities } from '../../activities/host.js';
import { OWNER_FILE, createWorkDir } from '../../activities/workspace.js';
import { parseConfig, type Config } from '../../core/config.js';
import { asRunByWorker } from '../support/activities.js';
import { makeRawDisk, qemuConvert, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

/**
 * convertToRaw gives the cloud a format it takes (docs/glance.md, formats): a Glance cloud that
 * allows qcow2 gets a qcow2 as it was published, any other format as raw; a raw-only cloud (Ceph,
 * Synnefo) always raw; a qcow2-only cloud a qcow2. The workflow calls the same activity either way.
 */
describe('convertToRaw keeps the formats the configured cloud takes', () => {
  let root: { dir: string; cleanup: () => Promise<void> };
  let src: string;
  let work: string;
  let serial = 0;

  const config = (diskFormats?: Array<'qcow2' | 'raw'>): Config =>
    parseConfig(
      {
        worker: { workingFolder: work },
        security: { credentials: { glance: 'not-used-here' } },
        cloud: diskFormats
          ? {
              type: 'glance',
              name: 'site',
              authUrl: 'http://127.0.0.1:9/v3',
              applicationCredentialId: 'id',
              credential: 'glance',
              diskFormats,
            }
          : { type: 'synnefo' },
      },
      'test',
    );

  /** Runs the host's convertToRaw on a copy of `file` in a fresh work folder. */
  async function convert(cfg: Config, file: string, format: string) {
    const workflowId = `formats ${++serial}`;
    const workDir = await createWorkDir(cfg, workflowId);
    const input = path.join(workDir, file);
    await copyFile(path.join(src, file), input);
    const activities = asRunByWorker(createHostActivities({ config: cfg, logger: quietLogger }));
    const result = await activities.convertToRaw({ workflowId, path: input, workDir, format });
    const left = (await readdir(workDir)).filter((f) => f !== OWNER_FILE);
    return { input, result, left };
  }

  /** qemu-img compare: exit 0 when both images hold the same guest-visible content. */
  const sameContent = async (a: string, aFormat: string, b: string, bFormat: string) =>
    (await execa('qemu-img', ['compare', '-q', '-f', aFormat, '-F', bFormat, a, b], { reject: false })).exitCode === 0;

  beforeAll(async () => {
    root = await tempDir('snf-convert-clouds-');
    src = path.join(root.dir, 'src');
    work = path.join(root.dir, 'work');
    await execa('mkdir', ['-p', src, work]);
    const at = (f: string) => path.join(src, f);
    await makeRawDisk(at('disk.img'), 8);
    await qemuConvert(at('disk.img'), 'raw', at('disk.qcow2'), 'qcow2');
    await qemuConvert(at('disk.img'), 'raw', at('disk.vmdk'), 'vmdk');
    await execa('sh', ['-c', 'bzip2 -c disk.qcow2 > disk.qcow2.bz2'], { cwd: src });
  });

  afterAll(async () => {
    await root?.cleanup();
  });

  test('a Glance cloud allowing qcow2 gets the published qcow2 byte for byte, without a conversion', async () => {
    const { input, result, left } = await convert(config(['qcow2', 'raw']), 'disk.qcow2', 'qcow2');
    expect(result).toMatchObject({ path: input, format: 'qcow2', virtualSize: 8 * 1024 * 1024, steps: [] });
    expect((await readFile(result.path)).equals(await readFile(path.join(src, 'disk.qcow2')))).toBe(true);
    expect(left).toEqual(['disk.qcow2']);
  });

  test('a qcow2 inside bzip2 is unpacked and then kept as qcow2', async () => {
    const { result, left } = await convert(config(['qcow2', 'raw']), 'disk.qcow2.bz2', 'bz2');
    expect(result).toMatchObject({ format: 'qcow2', steps: ['bunzip2 disk.qcow2.bz2'] });
    expect((await readFile(result.path)).equals(await readFile(path.join(src, 'disk.qcow2')))).toBe(true);
    expect(left.sort()).toEqual(['disk.qcow2', 'disk.qcow2.bz2']);
  });

  test('any other format goes to a Glance cloud allowing qcow2 as raw', async () => {
    const { result } = await convert(config(['qcow2', 'raw']), 'disk.vmdk', 'vmdk');
    expect(result).toMatchObject({ format: 'raw', steps: ['qemu-img convert disk.vmdk from vmdk to raw'] });
    expect((await readFile(result.path)).equals(await readFile(path.join(src, 'disk.img')))).toBe(true);
  });

  test.each([
    ['a raw-only Glance cloud (Ceph RBD)', ['raw'] as Array<'raw'>],
    ['Synnefo', undefined],
  ])('%s gets a qcow2 converted to raw', async (_name, formats) => {
    const { result, left } = await convert(config(formats), 'disk.qcow2', 'qcow2');
    expect(result).toMatchObject({ format: 'raw', steps: ['qemu-img convert disk.qcow2 from qcow2 to raw'] });
    expect((await readFile(result.path)).equals(await readFile(path.join(src, 'disk.img')))).toBe(true);
    expect(left.sort()).toEqual(['disk.qcow2', 'disk.raw']);
  });

  test('a qcow2-only Glance cloud gets a raw image converted to qcow2 with the same content', async () => {
    const { result, left } = await convert(config(['qcow2']), 'disk.img', 'raw');
    expect(result).toMatchObject({ format: 'qcow2', steps: ['qemu-img convert disk.img from raw to qcow2'] });
    expect(path.basename(result.path)).toBe('disk.qcow2');
    expect((await execa('qemu-img', ['info', '--output=json', result.path])).stdout).toContain('"format": "qcow2"');
    expect(await sameContent(result.path, 'qcow2', path.join(src, 'disk.img'), 'raw')).toBe(true);
    expect(left.sort()).toEqual(['disk.img', 'disk.qcow2']);
  });
});
