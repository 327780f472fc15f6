import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseConfig, redactConfig, REDACTED } from '../../core/config.js';
import { ConfigError } from '../../core/errors.js';
import { scrubSecrets, registerSecrets } from '../../core/logging.js';
import { ROOT } from '../support/cli.js';

const SAMPLE = path.join(ROOT, 'test/fixtures/application.conf.sample');

async function tempFile(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-config-'));
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

describe('loadConfig', () => {
  test('the original application.conf sample loads unchanged, new sections get defaults', async () => {
    const { config, source } = await loadConfig({ file: SAMPLE, env: {} });
    expect(source).toBe(SAMPLE);
    expect(config.rabbitmq).toMatchObject({
      servers: ['localhost:5672'],
      username: 'vmcatcher',
      password: '*****',
      queue: 'vmcatcher',
      exchange: 'vmcatcher',
      routingKey: 'vmcatcher',
      vhost: '/',
    });
    expect(config.temporal).toMatchObject({
      address: '127.0.0.1:7233',
      namespace: 'default',
      taskQueue: 'snf-vmcatcher',
    });
    expect(config.security.signaturePolicy).toBe('require');
    expect(config.synnefo.sudo).toEqual(['sudo', '-n']);
  });

  test('JSON files are read as JSON', async () => {
    const file = await tempFile(
      'conf.json',
      JSON.stringify({ rabbitmq: { queue: 'q1' }, temporal: { namespace: 'ns' } }),
    );
    const { config } = await loadConfig({ file, env: {} });
    expect(config.rabbitmq.queue).toBe('q1');
    expect(config.temporal.namespace).toBe('ns');
  });

  test('HOCON ${?ENV} substitutions are resolved from the environment', async () => {
    process.env.SNF_TEST_QUEUE_NAME = 'from-env';
    const file = await tempFile('a.conf', 'rabbitmq { queue = "default", queue = ${?SNF_TEST_QUEUE_NAME} }');
    const { config } = await loadConfig({ file, env: {} });
    expect(config.rabbitmq.queue).toBe('from-env');
    delete process.env.SNF_TEST_QUEUE_NAME;
  });

  test("environment variables override the file, Temporal ones under Temporal's own names", async () => {
    const { config } = await loadConfig({
      file: SAMPLE,
      env: {
        TEMPORAL_ADDRESS: 'temporal.example.org:7233',
        TEMPORAL_NAMESPACE: 'egi',
        SNF_VMCATCHER_RABBITMQ_SERVERS: 'a:5672, b:5673',
        SNF_VMCATCHER_RABBITMQ_PASSWORD: 'pw-from-env',
      },
    });
    expect(config.temporal.address).toBe('temporal.example.org:7233');
    expect(config.temporal.namespace).toBe('egi');
    expect(config.rabbitmq.servers).toEqual(['a:5672', 'b:5673']);
    expect(config.rabbitmq.password).toBe('pw-from-env');
  });

  test('command-line overrides apply last', async () => {
    const { config } = await loadConfig({ file: SAMPLE, env: {}, overrides: { 'worker.workingFolder': '/mnt/tmp' } });
    expect(config.worker.workingFolder).toBe('/mnt/tmp');
  });

  const invalid: Array<[string, string, string]> = [
    ['rabbitmq.servers is not a list', 'rabbitmq { servers = "localhost:5672" }', 'rabbitmq.servers'],
    ['a server is not host:port', 'rabbitmq { servers = ["localhost:notaport"] }', 'rabbitmq.servers.0'],
    ['an unknown signature policy', 'security { signaturePolicy = "maybe" }', 'security.signaturePolicy'],
    ['a negative prefetch', 'rabbitmq { prefetch = -1 }', 'rabbitmq.prefetch'],
    ['an empty queue name', 'rabbitmq { queue = "" }', 'rabbitmq.queue'],
  ];
  test.each(invalid)('refuses a config where %s, naming the key and the file', async (_name, text, key) => {
    const file = await tempFile('bad.conf', text);
    const error = await loadConfig({ file, env: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toContain(file);
    expect((error as ConfigError).message).toContain(`'${key}'`);
    expect((error as ConfigError).key).toBe(key);
  });

  test('a missing file is an error naming the file (the original silently loaded nothing)', async () => {
    const error = await loadConfig({ file: '/nonexistent/application.conf', env: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe('/nonexistent/application.conf: configuration file not found');
  });

  test('a HOCON syntax error names the file', async () => {
    const file = await tempFile('syntax.conf', 'rabbitmq { servers = [ ');
    const error = await loadConfig({ file, env: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain(`${file}: cannot parse configuration`);
  });
});

describe('credential rules', () => {
  test('a rule without a host is refused, naming the rule: its token would go to any host an event names', () => {
    const parse = (rule: Record<string, string>) =>
      parseConfig({ security: { credentials: { appdb: 't' }, credentialRules: [rule] } }, 'test.conf');
    const error = (() => {
      try {
        parse({ imageList: 'a6c4dc4b-3df6-4d3e-8c13-13d3e5f0c1a3', credential: 'appdb' });
      } catch (err) {
        return err;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain('security.credentialRules.0.host');
    expect((error as Error).message).toContain('a rule must name the host the credential is sent to');
    expect(parse({ host: 'appdb-pi.egi.eu', imageList: 'l', credential: 'appdb' }).security.credentialRules).toEqual([
      { host: 'appdb-pi.egi.eu', imageList: 'l', credential: 'appdb' },
    ]);
  });
});

describe('redaction', () => {
  test('redactConfig replaces the password, the Temporal API key and every named credential', () => {
    const config = parseConfig(
      {
        rabbitmq: { password: 'hunter2-secret' },
        temporal: { apiKey: 'api-key-123' },
        security: { credentials: { appdb: 'token-abc' } },
      },
      'test',
    );
    const redacted = redactConfig(config);
    expect(redacted.rabbitmq.password).toBe(REDACTED);
    expect(redacted.temporal.apiKey).toBe(REDACTED);
    expect(redacted.security.credentials).toEqual({ appdb: REDACTED });
    const text = JSON.stringify(redacted);
    for (const secret of ['hunter2-secret', 'api-key-123', 'token-abc']) expect(text).not.toContain(secret);
    // The original is untouched.
    expect(config.rabbitmq.password).toBe('hunter2-secret');
  });

  test('scrubSecrets removes registered secret values and URL userinfo', () => {
    registerSecrets(['s3cr3t-value']);
    expect(scrubSecrets('connecting with s3cr3t-value now')).toBe('connecting with *** now');
    expect(scrubSecrets('GET https://TOKEN123:x-oauth-basic@vmcaster.example.org/list')).toBe(
      'GET https://***@vmcaster.example.org/list',
    );
  });
});
