import { credentialNameFor } from '../../core/credentials.js';
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
  const parse = (rule: Record<string, string>) =>
    parseConfig({ security: { credentials: { appdb: 't' }, credentialRules: [rule] } }, 'test.conf');
  const errorOf = (rule: Record<string, string>) => {
    try {
      parse(rule);
    } catch (err) {
      return err as Error;
    }
    throw new Error('the rule was accepted');
  };

  test('a rule without an origin is refused, naming the rule: its token would go to any host an event names', () => {
    const error = errorOf({ imageList: 'a6c4dc4b-3df6-4d3e-8c13-13d3e5f0c1a3', credential: 'appdb' });
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain('security.credentialRules.0.origin');
    expect(error.message).toContain('a rule must name the origin the credential is sent to');
  });

  test('a rule names an https origin (scheme, host, port), normalised', () => {
    expect(
      parse({ origin: 'https://AppDB-PI.egi.eu:443/', imageList: 'l', credential: 'appdb' }).security,
    ).toMatchObject({ credentialRules: [{ origin: 'https://appdb-pi.egi.eu', imageList: 'l', credential: 'appdb' }] });
    expect(parse({ origin: 'https://images.example.org:8443', credential: 'appdb' }).security.credentialRules).toEqual([
      { origin: 'https://images.example.org:8443', credential: 'appdb' },
    ]);
  });

  test('an older rule with a bare host keeps loading: it means https on port 443', () => {
    expect(parse({ host: 'appdb-pi.egi.eu', imageList: 'l', credential: 'appdb' }).security.credentialRules).toEqual([
      { origin: 'https://appdb-pi.egi.eu', imageList: 'l', credential: 'appdb' },
    ]);
  });

  test.each([
    [{ origin: 'http://appdb-pi.egi.eu', credential: 'appdb' }, 'origin', 'never sent over plain http'],
    [{ origin: 'https://appdb-pi.egi.eu/store', credential: 'appdb' }, 'origin', 'write "https://appdb-pi.egi.eu"'],
    [{ origin: 'appdb-pi.egi.eu', credential: 'appdb' }, 'origin', 'is not an origin'],
    [{ host: 'appdb-pi.egi.eu:8443', credential: 'appdb' }, 'host', "host 'appdb-pi.egi.eu:8443' is ambiguous"],
    [{ host: 'http://appdb-pi.egi.eu', credential: 'appdb' }, 'host', 'is ambiguous'],
    [{ host: 'a.org', origin: 'https://a.org', credential: 'appdb' }, 'host', 'not both'],
  ])('%j is refused, naming the rule and why', (rule, key, why) => {
    const error = errorOf(rule);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain(`security.credentialRules.0.${key}`);
    expect(error.message).toContain(why);
  });

  test('a rule applies to its exact origin over verified https only', () => {
    const config = parseConfig(
      {
        security: {
          credentials: { appdb: 't', other: 'u' },
          credentialRules: [
            { origin: 'https://appdb-pi.egi.eu', imageList: 'private', credential: 'other' },
            { host: 'appdb-pi.egi.eu', credential: 'appdb' },
          ],
        },
      },
      'test.conf',
    );
    const name = (url: string, more: { imageListId?: string; insecureTls?: boolean } = {}) =>
      credentialNameFor(config, { url, ...more });
    expect(name('https://appdb-pi.egi.eu/x.img')).toBe('appdb');
    expect(name('https://APPDB-PI.egi.eu:443/x.img')).toBe('appdb');
    expect(name('https://appdb-pi.egi.eu/x.img', { imageListId: 'private' })).toBe('other');
    expect(name('http://appdb-pi.egi.eu/x.img')).toBeUndefined();
    expect(name('http://appdb-pi.egi.eu:443/x.img')).toBeUndefined();
    expect(name('https://appdb-pi.egi.eu:8443/x.img')).toBeUndefined();
    expect(name('https://appdb-pi.egi.eu.evil.org/x.img')).toBeUndefined();
    expect(name('https://appdb-pi.egi.eu/x.img', { insecureTls: true })).toBeUndefined();
    expect(name('not a url')).toBeUndefined();
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
