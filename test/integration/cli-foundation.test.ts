import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ROOT, runCli } from '../support/cli.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';

const SAMPLE = path.join(ROOT, 'test/fixtures/application.conf.sample');

describe('show-conf', () => {
  test('prints the original sample as JSON with the password redacted, through the legacy command line', async () => {
    const result = await runCli(['-v', 'show-conf', '-conf', SAMPLE]);
    expect(result.exitCode).toBe(0);
    const shown = JSON.parse(result.stdout);
    expect(shown.rabbitmq).toMatchObject({
      servers: ['localhost:5672'],
      username: 'vmcatcher',
      queue: 'vmcatcher',
      password: '***redacted***',
    });
    expect(result.stdout).not.toContain('*****');
  });

  test('refuses rabbitmq.servers that is not a list with one line naming the key and the file, exit 2', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-cli-'));
    const file = path.join(dir, 'application.conf');
    await writeFile(file, 'rabbitmq { servers = "localhost:5672" }\n');
    const result = await runCli(['show-conf', '-conf', file]);
    expect(result.exitCode).toBe(2);
    expect(result.stdout).toBe('');
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(file);
    expect(lines[0]).toContain("'rabbitmq.servers'");
  });

  test('an unknown option is a usage error (exit 2), not a stack trace', async () => {
    const result = await runCli(['show-conf', '-bogus']);
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toMatch(/Unsupported option|bogus/);
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('show-env and usage', () => {
  test('show-env prints the environment as JSON with secret variables redacted', async () => {
    const result = await runCli(['show-env'], {
      env: { VMCATCHER_EVENT_TYPE: 'AvailablePostfix', SNF_VMCATCHER_RABBITMQ_PASSWORD: 'do-not-show' },
    });
    expect(result.exitCode).toBe(0);
    const env = JSON.parse(result.stdout);
    expect(env.VMCATCHER_EVENT_TYPE).toBe('AvailablePostfix');
    expect(result.stdout).not.toContain('do-not-show');
  });

  test('usage lists the commands; no command at all prints usage and exits 1 like the original', async () => {
    const usage = await runCli(['usage']);
    expect(usage.exitCode).toBe(0);
    for (const command of ['show-env', 'show-conf', 'test-queue', 'register-now'])
      expect(usage.stdout).toContain(command);
    const none = await runCli(['-v']);
    expect(none.exitCode).toBe(1);
    expect(none.stdout).toContain('show-conf');
  });
});

describe('test-queue', () => {
  const topology = uniqueTopology('testqueue');
  afterAll(() => deleteTopology(topology));

  test('exits 0 against the running RabbitMQ and declares the topology', async () => {
    const conf = await writeConf(topology);
    const result = await runCli(['test-queue', '-conf', conf]);
    expect(result.stderr).toBe('');
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toContain(`Successfully connected to queue using ${conf}`);
  });

  test('exits non-zero with one clear line against a closed port', async () => {
    const conf = await writeConf(topology, '', ['127.0.0.1:1']);
    const result = await runCli(['test-queue', '-conf', conf]);
    expect(result.exitCode).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^snf-vmcatcher: Could not connect to queue using .*127\.0\.0\.1:1: connection refused/);
  });
});

describe('register-now refuses before contacting anything', () => {
  test("a URL with credentials in it (they would be kept in Temporal's history): exit 2, one line naming --url", async () => {
    const result = await runCli(['register-now', '--url', 'https://TOKEN123:x-oauth-basic@example.org/a.img']);
    expect(result.exitCode).toBe(2);
    expect(result.stderr.trim()).toBe(
      'snf-vmcatcher: --url carries credentials in the URL; configure them as a named credential (security.credentials) instead',
    );
  });

  test('an unreachable Temporal server is one line naming the address and the key, exit 1', async () => {
    const result = await runCli(['register-now', '--url', 'https://example.org/a.img'], {
      env: { TEMPORAL_ADDRESS: '127.0.0.1:1' },
    });
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(
      /^snf-vmcatcher: cannot reach the Temporal server at 127\.0\.0\.1:1 \(temporal\.address \/ TEMPORAL_ADDRESS\)/,
    );
  });
});
