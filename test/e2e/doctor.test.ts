/**
 * `doctor` through the real command line, against a healthy stack (real RabbitMQ, the
 * services project's Temporal dev server, the Synnefo fake, a real Keystone and Glance, a real
 * HTTP server for a subscribed list, a CA folder with a fresh CRL) and against each broken part in
 * turn. The shared RabbitMQ is never stopped: a broken broker is a wrong password or a port where
 * nothing listens.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { REGION, startOpenStack, type OpenStack } from '../support/openstack.js';
import { deleteTopology, uniqueTopology } from '../support/rabbit.js';
import { TEMPORAL_CLI } from '../support/temporal-server.js';
import { createTestPki, type TestPki } from '../support/test-pki.js';

const MiB = 1024 * 1024;
const TOKEN = `list-token-${randomBytes(6).toString('hex')}`;

let dir: string;
let pki: TestPki;
let noCrlPki: TestPki;
let server: TestServer;
let openstack: OpenStack;
let cloud: Awaited<ReturnType<typeof fakeCloud>>;
let fullDisk: string;
const topology = uniqueTopology('doctor');

interface Parts {
  rabbitmq?: string;
  caPath?: string;
  workingFolder?: string;
  kamakiCloud?: string;
  glance?: { secret: string };
  listToken?: string;
}

/** A whole configuration: every part healthy unless `parts` breaks one. */
async function conf(name: string, parts: Parts = {}): Promise<string> {
  const file = path.join(dir, `${name}.conf`);
  const secretFile = path.join(dir, `${name}.glance-secret`);
  if (parts.glance) await writeFile(secretFile, `${parts.glance.secret}\n`, { mode: 0o600 });
  await writeFile(
    file,
    `rabbitmq {
  servers = ["127.0.0.1:5672"]
  username = "guest"
  password = "guest"
  queue = "${topology.queue}"
  exchange = "${topology.exchange}"
  routingKey = "${topology.routingKey}"
  ${parts.rabbitmq ?? ''}
}
# The clock is compared with this server's Date header (and the list's).
temporal { webUiUrl = "${server.url}" }
worker { workingFolder = "${parts.workingFolder ?? path.join(dir, 'work')}", diskReserveBytes = ${6 * MiB}, diskReservePercent = 0 }
spool { folder = "${path.join(dir, 'spool')}" }
security {
  caPath = "${parts.caPath ?? pki.caDir}"
  credentials { list = "${parts.listToken ?? TOKEN}"${parts.glance ? `, glance = { file = "${secretFile}" }` : ''} }
}
subscriptions = [ { url = "${server.at('/image.list')}", credential = list } ]
${cloud.synnefoConf(`cloud = ${parts.kamakiCloud ?? cloud.cloud}`)}
${
  parts.glance
    ? `cloud {
  type = glance
  name = doctor
  authUrl = "${openstack.keystoneUrl}"
  applicationCredentialId = "${openstack.demo.appCredentialId}"
  credential = glance
  region = ${REGION}
}`
    : ''
}
`,
  );
  return file;
}

function doctor(confFile: string, extra: string[] = [], env: Record<string, string> = {}) {
  return runCli(['doctor', '--conf', confFile, ...extra], { env: { ...cloud.env, ...env }, timeoutMs: 120_000 });
}

/** The check lines of an output, by their mark: `{ '✔': [...], '✘': [...] }`. */
function marks(stdout: string): Record<string, string[]> {
  const out: Record<string, string[]> = { '✔': [], '✘': [], '–': [] };
  for (const line of stdout.split('\n')) {
    const m = /^([✔✘–]) (.+?): /.exec(line);
    if (m) out[m[1]].push(m[2]);
  }
  return out;
}

async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

beforeAll(async () => {
  await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
  dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-doctor-'));
  [openstack, pki, noCrlPki] = await Promise.all([
    startOpenStack(),
    createTestPki('Doctor CA'),
    createTestPki('No CRL'),
  ]);
  await pki.publishCrl([]);
  cloud = await fakeCloud(dir);
  server = await startTestServer({
    routes: {
      '/image.list': {
        body: 'a signed list',
        authorization: `Basic ${Buffer.from(`${TOKEN}:x-oauth-basic`).toString('base64')}`,
      },
    },
  });
  // A working folder on a filesystem of its own (8 MiB), filled until less than the reserve (6 MiB) is free.
  fullDisk = path.join(dir, 'full');
  await mkdir(fullDisk);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', fullDisk]);
  await execa('dd', ['if=/dev/zero', `of=${path.join(fullDisk, 'filler')}`, 'bs=1M', 'count=4']);
}, 420_000);

afterAll(async () => {
  await server?.close();
  await openstack?.stop();
  await pki?.cleanup();
  await noCrlPki?.cleanup();
  if (fullDisk) await execa('umount', [fullDisk]).catch(() => undefined);
  await deleteTopology(topology).catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('doctor', () => {
  test('a healthy stack with a Synnefo cloud: every check ✔, exit 0, and no secret in the output', async () => {
    const result = await doctor(await conf('healthy'));
    const seen = marks(result.stdout);
    expect({ exitCode: result.exitCode, failed: seen['✘'] }).toEqual({ exitCode: 0, failed: [] });
    expect(seen['✔']).toEqual([
      'configuration',
      'RabbitMQ',
      'spool folder',
      'Temporal server',
      'Temporal namespace',
      'search attributes',
      `Synnefo cloud '${cloud.cloud}'`,
      'CA folder',
      'working folder',
      'free space',
      'snf-mkimage',
      `subscription ${server.at('/image.list')}`,
      'clock',
    ]);
    expect(result.stdout).toContain(`kamaki user info: account ${await cloud.account()}`);
    expect(result.stdout).toMatch(/CA folder: 1 CA certificates, 1 CRLs, all with nextUpdate in the future/);
    // The list was asked for with its credential, conditionally, and not synced.
    const asked = server.requests.filter((r) => r.path === '/image.list');
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.at(-1)!.headers['if-modified-since']).toBeDefined();
    expect(result.stdout + result.stderr).not.toContain(TOKEN);
  });

  test('a healthy stack with a Glance cloud: a Keystone token and the image endpoint ✔, exit 0', async () => {
    const result = await doctor(await conf('glance', { glance: { secret: openstack.demo.appCredentialSecret } }));
    expect({ exitCode: result.exitCode, failed: marks(result.stdout)['✘'] }).toEqual({ exitCode: 0, failed: [] });
    expect(result.stdout).toMatch(
      new RegExp(`✔ Glance cloud 'doctor': a Keystone token .* for project ${openstack.demo.projectId}`),
    );
    expect(result.stdout + result.stderr).not.toContain(openstack.demo.appCredentialSecret);
  });

  test('a wrong Glance secret: ✘ on the Glance cloud only, exit 1, the secret not printed', async () => {
    const wrong = `wrong-${randomBytes(6).toString('hex')}`;
    const result = await doctor(await conf('glance-wrong', { glance: { secret: wrong } }));
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual(["Glance cloud 'doctor'"]);
    expect(result.stdout).toMatch(/✘ Glance cloud 'doctor': Keystone at .* refused application credential/);
    expect(result.stdout).toMatch(/→ check cloud.authUrl/);
    expect(result.stdout + result.stderr).not.toContain(wrong);
  });

  test('RabbitMQ refusing the password: ✘ RabbitMQ with what to check, exit 1', async () => {
    const result = await doctor(await conf('rabbit-password', { rabbitmq: 'password = "not-the-password"' }));
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual(['RabbitMQ']);
    expect(result.stdout).toMatch(/→ check rabbitmq.username and rabbitmq.password/);
    expect(result.stdout).not.toContain('not-the-password');
  });

  test('RabbitMQ down (nothing listens on the configured port): ✘ RabbitMQ, exit 1', async () => {
    const port = await closedPort();
    const result = await doctor(await conf('rabbit-down', { rabbitmq: `servers = ["127.0.0.1:${port}"]` }));
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual(['RabbitMQ']);
    expect(result.stdout).toMatch(new RegExp(`✘ RabbitMQ: .*127\\.0\\.0\\.1:${port}: connection refused`));
    expect(result.stdout).toMatch(/→ start RabbitMQ/);
  });

  test("a namespace without the project's search attributes: ✘ search attributes with the command that adds them, exit 1", async () => {
    const namespace = `doctor-bare-${randomBytes(3).toString('hex')}`;
    await execa(TEMPORAL_CLI, [
      'operator',
      'namespace',
      'create',
      '--namespace',
      namespace,
      '--address',
      process.env.TEMPORAL_ADDRESS!,
    ]);
    const result = await doctor(await conf('bare-namespace'), [], { TEMPORAL_NAMESPACE: namespace });
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual(['search attributes']);
    expect(result.stdout).toMatch(
      new RegExp(`✘ search attributes: the namespace '${namespace}' lacks ImageIdentifier \\(Keyword\\)`),
    );
    expect(result.stdout).toContain(`temporal operator search-attribute create --namespace ${namespace}`);
  });

  test('a CA folder without CRLs: ✘ CA folder naming fetch-crl, exit 1', async () => {
    const result = await doctor(await conf('no-crl', { caPath: noCrlPki.caDir }));
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual(['CA folder']);
    expect(result.stdout).toMatch(/✘ CA folder: .* no CRLs/);
    expect(result.stdout).toMatch(/→ run fetch-crl/);
  });

  test('a full working folder (less free than the reserve): ✘ free space with what is free and kept, exit 1', async () => {
    const result = await doctor(await conf('full-disk', { workingFolder: fullDisk }));
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual(['free space']);
    expect(result.stdout).toMatch(
      /✘ free space: .*full: 4\.0 MiB free of 8\.0 MiB, 6\.0 MiB kept in reserve .* nothing left above the reserve/,
    );
  });

  test('a subscription whose credential the list host refuses: ✘ on that subscription, the token not printed', async () => {
    const wrong = `wrong-token-${randomBytes(6).toString('hex')}`;
    const result = await doctor(await conf('list-token', { listToken: wrong }));
    expect(result.exitCode).toBe(1);
    expect(marks(result.stdout)['✘']).toEqual([`subscription ${server.at('/image.list')}`]);
    expect(result.stdout).toMatch(/401/);
    expect(result.stdout + result.stderr).not.toContain(wrong);
  });

  test('--for checks only what that service cannot run without: stale CRLs and a tight disk stop no unit, an unknown cloud stops the worker', async () => {
    const tight = await conf('tight', { caPath: noCrlPki.caDir, workingFolder: fullDisk });
    const bridge = await doctor(tight, ['--for', 'bridge']);
    expect(bridge.exitCode).toBe(0);
    expect(marks(bridge.stdout)['✔']).toEqual([
      'configuration',
      'RabbitMQ',
      'Temporal server',
      'Temporal namespace',
      'search attributes',
      'clock',
    ]);
    const worker = await doctor(tight, ['--for', 'worker']);
    expect({ exitCode: worker.exitCode, failed: marks(worker.stdout)['✘'] }).toEqual({ exitCode: 0, failed: [] });
    expect(marks(worker.stdout)['✔']).toContain('working folder');

    const unknownCloud = await conf('unknown-cloud', { kamakiCloud: 'nowhere' });
    const broken = await doctor(unknownCloud, ['--for', 'worker']);
    expect(broken.exitCode).toBe(1);
    expect(marks(broken.stdout)['✘']).toEqual(["Synnefo cloud 'nowhere'"]);
    expect(broken.stdout).toMatch(/→ check synnefo\.kamaki .*`kamaki user info --cloud nowhere`/);
    expect((await doctor(unknownCloud, ['--for', 'bridge'])).exitCode).toBe(0);
  });

  test('a configuration that does not load: ✘ configuration naming the key, exit 2', async () => {
    const bad = path.join(dir, 'bad.conf');
    await writeFile(bad, 'rabbitmq { servers = "not-a-list" }\n');
    const result = await doctor(bad);
    expect(result.exitCode).toBe(2);
    expect(result.stdout).toMatch(/✘ configuration: .*'rabbitmq.servers'/);
  });
});
