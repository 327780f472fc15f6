import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { pino } from 'pino';
import { guarded, runTool, setprivPath } from '../../runtime/tool-runner.js';

/**
 * A child program must die with the worker, even when the worker is killed with
 * SIGKILL and has no chance to clean up. `guarded` runs it under `setpriv --pdeathsig SIGKILL`.
 */
const PARENT = `
const { spawn } = require('node:child_process');
const [command, ...args] = process.argv.slice(1);
const child = spawn(command, args, { stdio: 'ignore' });
console.log(child.pid);
setInterval(() => undefined, 1000);
`;

async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return /\)\s+(\S)/.exec(stat)?.[1] !== 'Z';
  } catch {
    return false;
  }
}

/** Starts a node parent running `command args`, returns the parent and the child's pid. */
async function parentOf(command: string, args: string[]) {
  const parent = execa('node', ['-e', PARENT, command, ...args], { reject: false, buffer: false });
  const pid = await new Promise<number>((resolve) =>
    parent.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim()))),
  );
  return { parent, pid };
}

describe('child programs die with the worker', () => {
  test('setpriv is there (util-linux), so children are guarded', () => {
    expect(setprivPath()).toMatch(/\/setpriv$/);
    expect(guarded('qemu-img', ['info', '--', 'x'])).toEqual([
      setprivPath(),
      ['--pdeathsig', 'SIGKILL', '--', 'qemu-img', 'info', '--', 'x'],
    ]);
  });

  test('a guarded child is killed by the kernel when its parent is SIGKILLed; an unguarded one survives', async () => {
    const [command, args] = guarded('sleep', ['300']);
    const guardedRun = await parentOf(command, args);
    const plainRun = await parentOf('sleep', ['301']);
    // setpriv exec()s the program: the pid is sleep's own.
    await new Promise((r) => setTimeout(r, 200));
    expect((await readFile(`/proc/${guardedRun.pid}/cmdline`, 'utf8')).split('\0')[0]).toBe('sleep');
    expect(await alive(guardedRun.pid)).toBe(true);
    expect(await alive(plainRun.pid)).toBe(true);

    guardedRun.parent.kill('SIGKILL');
    plainRun.parent.kill('SIGKILL');
    await Promise.all([guardedRun.parent, plainRun.parent]);
    await new Promise((r) => setTimeout(r, 500));
    try {
      expect(await alive(guardedRun.pid)).toBe(false);
      expect(await alive(plainRun.pid)).toBe(true);
    } finally {
      for (const pid of [guardedRun.pid, plainRun.pid]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });

  test('runTool says a program that does not exist could not be run, and that this is permanent', async () => {
    await expect(
      runTool({
        tool: 'kamaki',
        command: '/nonexistent/kamaki',
        args: ['--version'],
        timeoutMs: 10_000,
        logger: pino({ level: 'silent' }),
      }),
    ).rejects.toMatchObject({
      name: 'ToolError',
      permanent: true,
      message: expect.stringMatching(/kamaki could not be run \(\/nonexistent\/kamaki\)/),
    });
  });
});
