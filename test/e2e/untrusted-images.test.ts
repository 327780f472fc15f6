import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { runCli } from '../support/cli.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { Site } from '../support/site.js';

const SECRET = 'kamaki-token-fedcba9876543210';

/**
 * Untrusted images through the real CLI and worker, with `synnefo.prepare = false` (nothing but our
 * checks between the download and the upload): a qcow2 whose external data file is a file of
 * the worker's host, and an HTML error page served with 200, both fail the registration at
 * once with a clear reason, and nothing is uploaded or registered.
 */
describe('untrusted images through the worker', () => {
  let site: Site;
  let dir: string;
  let server: TestServer;

  beforeAll(async () => {
    site = await Site.create('untrusted');
    dir = site.dir;
    const secret = path.join(dir, 'token');
    await writeFile(secret, `${SECRET}\n`.repeat(64));
    const scratch = path.join(dir, 'scratch');
    const qcow2 = path.join(dir, 'innocent.qcow2');
    await execa('truncate', ['-s', '1M', scratch]);
    await execa('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${scratch},data_file_raw=on,preallocation=metadata`,
      qcow2,
      '1M',
    ]);
    await execa('qemu-img', ['amend', '-f', 'qcow2', '-o', `data_file=${secret}`, qcow2]);
    server = await startTestServer({
      routes: {
        '/images/innocent.qcow2': { file: qcow2 },
        '/images/disk.img': {
          body: '<!DOCTYPE html><html><head><title>Token expired</title></head><body>Log in again</body></html>',
        },
      },
    });
    await site.start({ command: 'worker', synnefo: 'prepare = false' });
  });

  afterAll(async () => {
    await site?.close();
    await server?.close();
  });

  test.each([
    [
      'a qcow2 whose data file is the worker’s token',
      '/images/innocent.qcow2',
      /Registration failed: .*innocent\.qcow2 refused: its data lives in an external data file/,
    ],
    [
      'an HTML error page served with 200',
      '/images/disk.img',
      /Registration failed: .*disk\.img is not a disk image: it looks like an HTML page \(title 'Token expired'\)/,
    ],
  ])('%s fails at once, naming why, and nothing is uploaded', async (_name, route, expected) => {
    const started = Date.now();
    const result = await runCli(
      ['register-now', '--conf', site.conf, '--url', server.at(route), '--kamaki-cloud', 'e2e'],
      {
        env: site.env,
        timeoutMs: 120_000,
      },
    );
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(expected);
    expect(result.stderr).not.toMatch(/attempt 2/);
    expect(Date.now() - started).toBeLessThan(60_000);
    const state = await site.cloud.state();
    expect(state.images).toEqual([]);
    expect(state.invocations.filter((i) => i.argv.includes('upload'))).toEqual([]);
    expect(await readFile(path.join(dir, 'synnefo-state.json'), 'utf8').catch(() => '')).not.toContain(SECRET);
    expect(site.service!.log()).not.toContain(SECRET);
  });
});
