import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { convertToRaw } from '../../activities/convert.js';
import { OWNER_FILE, createWorkDir } from '../../activities/workspace.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { pipelineConfig, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

const MiB = 1024 * 1024;

async function sha512(file: string): Promise<string> {
  const hash = createHash('sha512');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Live qemu-img processes whose command line names a path under `folder`. */
async function qemuImgIn(folder: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (/\)\s+Z/.test(await readFile(`/proc/${entry}/stat`, 'utf8'))) continue;
      if (cmdline.some((a) => path.basename(a) === 'qemu-img') && cmdline.some((a) => a.includes(folder)))
        pids.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return pids;
}

/**
 * Issue #9: one attempt owns a work folder at a time. A retry of convertToRaw on the same worker
 * (the old attempt timed out but still runs) takes the folder over: the old attempt's qemu-img
 * is stopped, the old attempt deletes nothing, and the retry's raw image comes out whole.
 */
describe('a newer convert attempt takes the work folder over', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;

  beforeAll(async () => {
    root = await tempDir('snf-attempts-');
    const raw = path.join(root.dir, 'disk.raw');
    await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=512', 'status=none']);
    await writeLinuxMbr(raw, 512 * MiB);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path.join(root.dir, 'disk.qcow2')]);
  }, 120_000);

  afterAll(async () => {
    await root?.cleanup();
  });

  test('the old attempt stops its qemu-img and leaves the files alone; the new one converts the whole image', async () => {
    const work = path.join(root.dir, 'work');
    const config = pipelineConfig(work);
    const workflowId = 'takeover';
    const workDir = await createWorkDir(config, workflowId);
    const input = path.join(workDir, 'disk.qcow2');
    await copyFile(path.join(root.dir, 'disk.qcow2'), input);
    const deps = { config, logger: quietLogger };
    const request = { workflowId, path: input, workDir, format: 'qcow2' };

    const old = convertToRaw(deps, request);
    const oldOutcome = old.then(
      () => 'finished',
      (err: Error) => err.message,
    );
    const deadline = Date.now() + 30_000;
    while ((await qemuImgIn(workDir)).length === 0) {
      if (Date.now() > deadline) throw new Error('qemu-img never started');
      await new Promise((r) => setTimeout(r, 20));
    }

    const retry = await convertToRaw(deps, request);
    expect(await oldOutcome).toMatch(/a newer attempt took over the work folder/);
    expect(await qemuImgIn(workDir)).toEqual([]);
    expect(retry.virtualSize).toBe(512 * MiB);
    expect(await sha512(retry.path)).toBe(await sha512(path.join(root.dir, 'disk.raw')));
    expect((await readdir(workDir)).filter((f) => f !== OWNER_FILE).sort()).toEqual(['disk.qcow2', 'disk.raw']);
  }, 120_000);
});
