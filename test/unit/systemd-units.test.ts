import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT, runCliFromSource } from '../support/cli.js';

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
      const help = await runCliFromSource([...command, '--help']);
      expect({ file, exitCode: help.exitCode }).toEqual({ file, exitCode: 0 });
    }
  });

  test('each checks, before it starts, what its service needs (doctor --for), with the same configuration', async () => {
    for (const [file, service] of [
      ['snf-vmcatcher-bridge.service', 'bridge'],
      ['snf-vmcatcher-worker.service', 'worker'],
    ]) {
      const text = await readFile(path.join(UNITS, file), 'utf8');
      const pre = /^ExecStartPre=(\S+) (.*)$/m.exec(text);
      expect({ file, pre: pre?.[2] }).toEqual({
        file,
        pre: `doctor --for ${service} --conf /etc/snf-vmcatcher/application.conf`,
      });
      expect(path.basename(pre![1])).toBe('snf-vmcatcher');
      const conf = /^ExecStart=\S+ .*--conf (\S+)/m.exec(text)?.[1];
      expect(conf).toBe('/etc/snf-vmcatcher/application.conf');
      // The command line parses: a bad --for would be a usage error (exit 2) before any check.
      const help = await runCliFromSource(['doctor', '--for', service, '--help']);
      expect({ file, exitCode: help.exitCode }).toEqual({ file, exitCode: 0 });
    }
    expect((await runCliFromSource(['doctor', '--for', 'nobody', '--conf', '/dev/null'])).exitCode).toBe(2);
  });
});
