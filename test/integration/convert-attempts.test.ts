import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, readFile, readdir, writeFile } from 'node:fs/promises';
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

/** Whether a signal waits on `pid` (a stopped process keeps a SIGTERM pending), or the process is gone. */
async function signalPendingOrGone(pid: number): Promise<boolean> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    return /^(SigPnd|ShdPnd):\s*0*[1-9a-f]/m.test(status);
  } catch {
    return true;
  }
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * One attempt owns a work folder at a time. A retry of convertToRaw on the same worker
 * (the old attempt timed out but still runs) takes the folder over: the old attempt's qemu-img
 * is stopped, the old attempt deletes nothing, and the retry's raw image comes out whole.
 */
describe('a newer convert attempt takes the work folder over', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  const savedPath = process.env.PATH;

  beforeAll(async () => {
    root = await tempDir('snf-attempts-');
    const raw = path.join(root.dir, 'disk.raw');
    await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=64', 'status=none']);
    await writeLinuxMbr(raw, 64 * MiB);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path.join(root.dir, 'disk.qcow2')]);
    // The old attempt must still be converting when the retry arrives, however fast the machine:
    // from here on, the first `qemu-img convert` stops itself (SIGSTOP) before it reads a byte,
    // then is the real qemu-img once continued (so the image can be small). Every other call
    // (the retry's convert included) is the real qemu-img at once.
    const { stdout: realQemuImg } = await execa('sh', ['-c', 'command -v qemu-img']);
    const bin = path.join(root.dir, 'bin');
    await execa('mkdir', ['-p', bin]);
    const wrapper = path.join(bin, 'qemu-img');
    await writeFile(
      wrapper,
      [
        '#!/bin/sh',
        `if [ "$1" = convert ] && mkdir '${path.join(root.dir, 'held')}' 2>/dev/null; then kill -STOP $$; fi`,
        `exec '${realQemuImg}' "$@"`,
        '',
      ].join('\n'),
    );
    await chmod(wrapper, 0o755);
    process.env.PATH = `${bin}:${savedPath}`;
  }, 120_000);

  afterAll(async () => {
    process.env.PATH = savedPath;
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
    let held = 0;
    await waitFor("the old attempt's qemu-img to start, held", async () => {
      [held = 0] = await qemuImgIn(workDir);
      return held !== 0 && /\)\s+T/.test(await readFile(`/proc/${held}/stat`, 'utf8').catch(() => ''));
    });

    const retrying = convertToRaw(deps, request);
    // The retry's takeover signals the held qemu-img; once the signal waits on it, let it run to take it.
    await waitFor('the takeover to signal the old qemu-img', () => signalPendingOrGone(held));
    try {
      process.kill(held, 'SIGCONT');
    } catch {
      // already gone
    }
    const retry = await retrying;
    expect(await oldOutcome).toMatch(/a newer attempt took over the work folder/);
    expect(await qemuImgIn(workDir)).toEqual([]);
    expect(retry.virtualSize).toBe(64 * MiB);
    expect(await sha512(retry.path)).toBe(await sha512(path.join(root.dir, 'disk.raw')));
    expect((await readdir(workDir)).filter((f) => f !== OWNER_FILE).sort()).toEqual(['disk.qcow2', 'disk.raw']);
  }, 120_000);
});
