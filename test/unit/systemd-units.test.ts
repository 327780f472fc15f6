import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT, runCli } from '../support/cli.js';

const UNITS = path.join(ROOT, 'packaging/systemd');

describe('the systemd units in packaging/systemd', () => {
  test('each runs an snf-vmcatcher command that exists, with its configuration, restarting on failure', async () => {
    const files = (await readdir(UNITS)).filter((f) => f.endsWith('.service'));
    expect(files.sort()).toEqual(['snf-vmcatcher-bridge.service', 'snf-vmcatcher-worker.service']);
    for (const file of files) {
      const text = await readFile(path.join(UNITS, file), 'utf8');
      const execStart = /^ExecStart=(\S+) (.*)$/m.exec(text);
      expect(execStart).not.toBeNull();
      expect(path.basename(execStart![1])).toBe('snf-vmcatcher');
      const args = execStart![2].split(/\s+/);
      expect(args).toContain('--conf');
      expect(text).toMatch(/^Restart=always$/m);
      const command = args.filter((a) => !a.startsWith('-') && !a.startsWith('/'));
      const help = await runCli([...command, '--help']);
      expect({ file, exitCode: help.exitCode }).toEqual({ file, exitCode: 0 });
    }
  });
});
