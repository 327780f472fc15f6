/**
 * Debian's real Keystone and glance-api for the Glance tests, started from the packages that
 * scripts/setup-openstack.sh installs: SQLite databases and a file store in a temporary
 * folder, both servers on 127.0.0.1 free ports, Glance behind keystonemiddleware (flavor
 * keystone). Pitfalls and timings: shared/reference/glance-notes.md. One instance per test file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { copyFile, cp, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { request } from 'undici';
import { freePort } from './bridge.js';
import { ROOT } from './cli.js';

export const REGION = 'RegionOne';
const DOMAIN = 'Default';

export interface ProjectAccount {
  projectName: string;
  projectId: string;
  username: string;
  userId: string;
  password: string;
  /** An application credential of this user on this project (what EGI asks sites to use). */
  appCredentialId: string;
  appCredentialSecret: string;
}

/** One glance-api process: its own database, file store and port, the image endpoint of one region. */
export interface GlanceRegion {
  region: string;
  url: string;
  /** Stops the process (SIGTERM), as an outage would; its database and images stay. */
  stop(): Promise<void>;
  /** Starts it again on the same port, database and store; resolves once it answers. */
  start(): Promise<void>;
  log(): Promise<string>;
}

export interface OpenStack {
  dir: string;
  /** Keystone's v3 base URL, e.g. http://127.0.0.1:PORT/v3. */
  keystoneUrl: string;
  /** Glance's base URL (the image service's endpoint in the catalog, region RegionOne). */
  glanceUrl: string;
  /** Every glance-api, one per region asked for (the first is RegionOne, `glanceUrl`). */
  glances: GlanceRegion[];
  admin: { username: string; password: string; projectName: string };
  /** The project our tests register into, with a member user. */
  demo: ProjectAccount;
  /** Another tenant of the same cloud, for "never touch what is not ours". */
  other: ProjectAccount;
  /** Seconds each phase of start-up took. */
  timings: Record<string, number>;
  /** A project-scoped token by password, straight from Keystone (for test set-up and checks). */
  token(user: { username: string; password: string; projectName: string }): Promise<string>;
  /** Makes a token invalid in Keystone at once (DELETE /v3/auth/tokens), as an expiry or a revocation would. */
  revokeToken(token: string): Promise<void>;
  glanceLog(): Promise<string>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Keystone's token lifetime in seconds ([token] expiration); 3600 by default. */
  tokenExpirationSeconds?: number;
  /**
   * More regions, each with a glance-api of its own (own database, store and port) registered in
   * the same Keystone as that region's image endpoint: several Glance clouds whose projects and
   * credentials come from one identity service, as a federation's sites do not but a test can.
   */
  moreRegions?: string[];
}

interface Service {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
}

const running = new Set<Service>();
process.once('exit', () => {
  for (const s of running) s.child.kill('SIGKILL');
});

function spawnService(
  name: string,
  command: string,
  args: string[],
  env: Record<string, string>,
  logFile: string,
): Service {
  const fd = openSync(logFile, 'a');
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const service = { name, child, exited };
  running.add(service);
  void exited.then(() => running.delete(service));
  return service;
}

async function stopService(service: Service): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const killed = await Promise.race([
    service.exited.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 10_000))),
  ]);
  clearTimeout(timer);
  if (killed) {
    service.child.kill('SIGKILL');
    await service.exited;
  }
}

async function waitUntilAnswering(service: Service, url: string, logFile: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (service.child.exitCode !== null) {
      throw new Error(
        `${service.name} exited with ${service.child.exitCode}; its log:\n${(await readFile(logFile, 'utf8')).slice(-4000)}`,
      );
    }
    try {
      const res = await request(url, { headersTimeout: 5000, bodyTimeout: 5000 });
      await res.body.dump();
      if (res.statusCode < 500) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `${service.name} did not answer ${url} within ${timeoutMs} ms; its log:\n${(await readFile(logFile, 'utf8')).slice(-4000)}`,
  );
}

async function timed<T>(timings: Record<string, number>, phase: string, work: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await work();
  } finally {
    timings[phase] = Math.round(performance.now() - start) / 1000;
  }
}

function ini(sections: Record<string, Record<string, string | number>>): string {
  return Object.entries(sections)
    .map(
      ([name, values]) =>
        `[${name}]\n${Object.entries(values)
          .map(([k, v]) => `${k} = ${v}`)
          .join('\n')}\n`,
    )
    .join('\n');
}

/** A small JSON client for Keystone's admin calls during set-up. */
async function keystoneCall(
  keystoneUrl: string,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  route: string,
  token: string | undefined,
  body?: unknown,
  extraHeaders: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; json: unknown }> {
  const res = await request(`${keystoneUrl}${route}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { 'x-auth-token': token } : {}), ...extraHeaders },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode >= 300) throw new Error(`keystone ${method} ${route}: ${res.statusCode} ${text.slice(0, 500)}`);
  return { status: res.statusCode, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

async function passwordToken(
  keystoneUrl: string,
  user: { username: string; password: string; projectName: string },
): Promise<string> {
  const res = await keystoneCall(keystoneUrl, 'POST', '/auth/tokens', undefined, {
    auth: {
      identity: {
        methods: ['password'],
        password: { user: { name: user.username, domain: { name: DOMAIN }, password: user.password } },
      },
      scope: { project: { name: user.projectName, domain: { name: DOMAIN } } },
    },
  });
  return String(res.headers['x-subject-token']);
}

/** Where the templates are kept: once per machine and package version, in the project's folders. */
const TEMPLATES = path.join(ROOT, '.tools', 'openstack-templates');
const ADMIN_PASSWORD = 'admin-secret-pw';
/** The identity endpoint a Keystone template is bootstrapped with; each start writes its own URL over it. */
const PLACEHOLDER_URL = 'http://127.0.0.1:9/v3';
/** Changes whenever what goes into a template changes, so an older one is never used. */
const TEMPLATE_REVISION = 3;

async function packageVersion(pkg: string): Promise<string> {
  const { stdout } = await execa('dpkg-query', ['-W', '-f=${Version}', pkg]);
  return stdout.replace(/[^\w.+-]/g, '_');
}

/**
 * Makes the folder `final` with `build` (given a fresh folder to fill) once: built aside and
 * renamed, so two test files starting at once never read half of one, and a failed build leaves
 * nothing behind.
 */
async function template(final: string, build: (folder: string) => Promise<void>): Promise<string> {
  if (await stat(final).catch(() => undefined)) return final;
  await mkdir(TEMPLATES, { recursive: true });
  const aside = await mkdtemp(`${final}.tmp-`);
  try {
    await build(aside);
    await rename(aside, final).catch((err: NodeJS.ErrnoException) => {
      // Another test file finished the same template first: theirs is as good.
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  } finally {
    await rm(aside, { recursive: true, force: true });
  }
  return final;
}

/** Runs one SQL statement on an SQLite file with Python's sqlite3 (what Keystone itself uses). */
async function sqlite(database: string, statement: string, ...params: string[]): Promise<void> {
  await execa('/usr/bin/python3', [
    '-c',
    'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2], sys.argv[3:]); c.commit(); c.close()',
    database,
    statement,
    ...params,
  ]);
}

/** Glance's migrated schema (`glance-manage db_sync`, tens of seconds of migrations), per package version. */
async function glanceTemplate(): Promise<string> {
  const final = path.join(TEMPLATES, `glance-${await packageVersion('python3-glance')}-r${TEMPLATE_REVISION}`);
  return template(final, async (folder) => {
    const conf = path.join(folder, 'glance-api.conf');
    await writeFile(
      conf,
      ini({
        DEFAULT: { log_file: path.join(folder, 'glance-manage.log'), use_stderr: 'false' },
        database: { connection: `sqlite:///${path.join(folder, 'glance.sqlite')}` },
      }),
    );
    await execa('/usr/bin/glance-manage', ['--config-file', conf, 'db_sync'], { all: true });
  });
}

/**
 * Keystone as `keystone-manage` leaves it before its first start, per package version: the migrated
 * schema (db_sync), the fernet and credential key repositories, and the bootstrap (admin user,
 * project and role, the identity service and its endpoints at PLACEHOLDER_URL). Each of those is a
 * Python process importing all of Keystone: 10–30 s of CPU on every start when each test did them.
 */
async function keystoneTemplate(): Promise<string> {
  const final = path.join(TEMPLATES, `keystone-${await packageVersion('python3-keystone')}-r${TEMPLATE_REVISION}`);
  return template(final, async (folder) => {
    for (const sub of ['fernet-keys', 'credential-keys']) await mkdir(path.join(folder, sub), { mode: 0o700 });
    const conf = path.join(folder, 'keystone.conf');
    await writeFile(
      conf,
      ini({
        DEFAULT: { log_file: path.join(folder, 'keystone-manage.log'), use_stderr: 'false' },
        database: { connection: `sqlite:///${path.join(folder, 'keystone.sqlite')}` },
        identity: { password_hash_rounds: 4 },
        fernet_tokens: { key_repository: path.join(folder, 'fernet-keys') },
        credential: { key_repository: path.join(folder, 'credential-keys') },
      }),
    );
    const { stdout: group } = await execa('id', ['-gn']);
    const user = os.userInfo().username;
    const manage = (args: string[], env: Record<string, string> = {}) =>
      execa('/usr/bin/keystone-manage', ['--config-file', conf, ...args], { env, all: true });
    await manage(['db_sync']);
    // SQLite's default rollback journal makes concurrent writers fail with "database is locked".
    await sqlite(path.join(folder, 'keystone.sqlite'), 'PRAGMA journal_mode=WAL');
    await manage(['fernet_setup', '--keystone-user', user, '--keystone-group', group]);
    await manage(['credential_setup', '--keystone-user', user, '--keystone-group', group]);
    // The password goes through the environment, never argv.
    await manage(
      [
        'bootstrap',
        '--bootstrap-username',
        'admin',
        '--bootstrap-project-name',
        'admin',
        '--bootstrap-role-name',
        'admin',
        '--bootstrap-service-name',
        'keystone',
        '--bootstrap-region-id',
        REGION,
        ...['admin', 'public', 'internal'].flatMap((iface) => [`--bootstrap-${iface}-url`, PLACEHOLDER_URL]),
      ],
      { OS_BOOTSTRAP_PASSWORD: ADMIN_PASSWORD },
    );
    // Everything in the database file itself, so a copy of that one file is the whole database.
    await sqlite(path.join(folder, 'keystone.sqlite'), 'PRAGMA wal_checkpoint(TRUNCATE)');
  });
}

/** Builds every template now (scripts/setup.sh does, once per machine), so no test file waits for one. */
export async function prepareOpenStackTemplates(): Promise<void> {
  await Promise.all([glanceTemplate(), keystoneTemplate()]);
}

export async function startOpenStack(opts: StartOptions = {}): Promise<OpenStack> {
  const timings: Record<string, number> = {};
  const started = performance.now();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-openstack-'));
  const services: Service[] = [];
  let glancesStarted: Promise<unknown> | undefined;
  const stop = async () => {
    for (const s of services.reverse()) await stopService(s);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const keystonePort = await freePort();
    const keystoneUrl = `http://127.0.0.1:${keystonePort}/v3`;
    const regions = [REGION, ...(opts.moreRegions ?? [])];
    const glancePorts: number[] = [];
    for (const _ of regions) glancePorts.push(await freePort());
    const glanceUrls = glancePorts.map((port) => `http://127.0.0.1:${port}`);
    const glanceUrl = glanceUrls[0];
    const glanceServicePassword = 'glance-service-pw';
    await mkdir(path.join(dir, 'lock'), { mode: 0o700 });
    // The first region's files are in `dir` itself (as before there were regions), the others' in `dir/<region>`.
    const glanceDirs = regions.map((region, i) => (i === 0 ? dir : path.join(dir, region)));
    for (const glanceDir of glanceDirs)
      for (const sub of ['images', 'staging', 'tasks'])
        await mkdir(path.join(glanceDir, sub), { recursive: true, mode: 0o700 });

    const keystoneConf = path.join(dir, 'keystone.conf');
    await writeFile(
      keystoneConf,
      ini({
        DEFAULT: { log_file: path.join(dir, 'keystone.log'), use_stderr: 'false' },
        database: { connection: `sqlite:///${path.join(dir, 'keystone.sqlite')}` },
        token: { provider: 'fernet', expiration: opts.tokenExpirationSeconds ?? 3600 },
        // bcrypt's fewest rounds: every password and application-credential check costs less on 2 busy cores.
        identity: { password_hash_rounds: 4 },
        fernet_tokens: { key_repository: path.join(dir, 'fernet-keys') },
        credential: { key_repository: path.join(dir, 'credential-keys') },
        // Keystone's own in-process cache (its one process holds it): a token validated once is not
        // decrypted and looked up in SQLite again on every Glance call. Keystone drops a revoked
        // token from this cache itself, so a revocation still takes effect at once.
        cache: { enabled: 'true', backend: 'dogpile.cache.memory' },
      }),
    );
    const pasteIni = path.join(dir, 'glance-api-paste.ini');
    await copyFile('/etc/glance/glance-api-paste.ini', pasteIni);
    const glanceConfs = glanceDirs.map((glanceDir) => path.join(glanceDir, 'glance-api.conf'));
    for (const [i, glanceDir] of glanceDirs.entries()) {
      await writeFile(
        glanceConfs[i],
        ini({
          DEFAULT: {
            bind_host: '127.0.0.1',
            bind_port: glancePorts[i],
            // One process: no forked workers, so the PID we hold is the whole server.
            workers: 0,
            log_file: path.join(glanceDir, 'glance-api.log'),
            use_stderr: 'false',
            enabled_backends: 'fs:file',
          },
          database: { connection: `sqlite:///${path.join(glanceDir, 'glance.sqlite')}` },
          glance_store: { default_backend: 'fs' },
          fs: { filesystem_store_datadir: path.join(glanceDir, 'images') },
          os_glance_staging_store: { filesystem_store_datadir: path.join(glanceDir, 'staging') },
          os_glance_tasks_store: { filesystem_store_datadir: path.join(glanceDir, 'tasks') },
          paste_deploy: { flavor: 'keystone', config_file: pasteIni },
          keystone_authtoken: {
            www_authenticate_uri: keystoneUrl,
            auth_url: keystoneUrl,
            auth_type: 'password',
            username: 'glance',
            password: glanceServicePassword,
            project_name: 'service',
            user_domain_name: DOMAIN,
            project_domain_name: DOMAIN,
            // Keystone itself is in the first region, whatever region this Glance serves.
            region_name: REGION,
            // keystonemiddleware looks for the internal identity endpoint unless told.
            interface: 'public',
            // keystonemiddleware's own cache, as on a production Glance: a token Glance validated is
            // trusted for token_cache_time seconds without asking Keystone again, and refused after
            // its expiry. Asking on every call made Keystone the largest CPU cost of these tests: it
            // takes 120-490 ms to validate an application-credential token (it lists the user's
            // effective roles several times per validation), 15 ms a password token. A token revoked
            // before Glance has seen it is refused at once (glance-client's revocation test).
            token_cache_time: 300,
          },
          oslo_concurrency: { lock_path: path.join(dir, 'lock') },
        }),
      );
    }

    // Glance's schema and Keystone's keys and bootstrap come from templates (built once per machine).
    await timed(timings, 'databases and keys from templates', async () => {
      const [glance, keystone] = await Promise.all([glanceTemplate(), keystoneTemplate()]);
      for (const glanceDir of glanceDirs)
        await copyFile(path.join(glance, 'glance.sqlite'), path.join(glanceDir, 'glance.sqlite'));
      await copyFile(path.join(keystone, 'keystone.sqlite'), path.join(dir, 'keystone.sqlite'));
      for (const sub of ['fernet-keys', 'credential-keys'])
        await cp(path.join(keystone, sub), path.join(dir, sub), { recursive: true, preserveTimestamps: true });
      // The bootstrap's identity endpoints (admin, public, internal) get this Keystone's URL.
      await sqlite(path.join(dir, 'keystone.sqlite'), 'UPDATE endpoint SET url = ?', keystoneUrl);
    });

    const glances: GlanceRegion[] = regions.map((region, i) => {
      const logFile = path.join(glanceDirs[i], 'glance-api.log');
      let current: Service | undefined;
      return {
        region,
        url: glanceUrls[i],
        async start() {
          if (current && current.child.exitCode === null && current.child.signalCode === null) return;
          const stdout = path.join(glanceDirs[i], 'glance-api.stdout.log');
          current = spawnService(
            `glance-api ${region}`,
            '/usr/bin/glance-api',
            ['--config-file', glanceConfs[i]],
            {},
            stdout,
          );
          services.push(current);
          await waitUntilAnswering(current, `${glanceUrls[i]}/versions`, logFile);
        },
        async stop() {
          if (current) await stopService(current);
        },
        log: () => readFile(logFile, 'utf8'),
      };
    });
    // glance-api asks Keystone nothing until a request comes: it starts beside Keystone.
    glancesStarted = timed(timings, 'glance start', () => Promise.all(glances.map((g) => g.start())));
    // Awaited below; a failure meanwhile must not be reported as unhandled.
    glancesStarted.catch(() => undefined);
    const keystoneLog = path.join(dir, 'keystone-uwsgi.log');
    const keystone = await timed(timings, 'keystone start', async () => {
      const s = spawnService(
        'keystone',
        'uwsgi_python3',
        // One process, one thread: SQLite objects are per thread. uwsgi's http-socket does not keep
        // connections alive, so tell clients (keystonemiddleware's pooled session) to close them.
        [
          '--http-socket',
          `127.0.0.1:${keystonePort}`,
          '--wsgi-file',
          '/usr/bin/keystone-wsgi-public',
          '--master',
          '--processes',
          '1',
          '--threads',
          '1',
          '--die-on-term',
          '--add-header',
          'Connection: close',
          '--need-app',
        ],
        { OS_KEYSTONE_CONFIG_FILES: keystoneConf },
        keystoneLog,
      );
      services.push(s);
      await waitUntilAnswering(s, keystoneUrl, keystoneLog);
      return s;
    });
    void keystone;

    const admin = { username: 'admin', password: ADMIN_PASSWORD, projectName: 'admin' };
    const accounts = await timed(timings, 'keystone accounts', async () => {
      const adminToken = await passwordToken(keystoneUrl, admin);
      const call = (method: 'GET' | 'POST' | 'PUT', route: string, body?: unknown) =>
        keystoneCall(keystoneUrl, method, route, adminToken, body);
      const roles = ((await call('GET', '/roles')).json as { roles: Array<{ id: string; name: string }> }).roles;
      const roleId = (name: string) => {
        const role = roles.find((r) => r.name === name);
        if (!role) throw new Error(`keystone has no role ${name}`);
        return role.id;
      };
      const createProject = async (name: string) =>
        (
          (await call('POST', '/projects', { project: { name, domain_id: 'default' } })).json as {
            project: { id: string };
          }
        ).project.id;
      const createUser = async (name: string, password: string, projectId: string, role: string) => {
        const userId = (
          (
            await call('POST', '/users', {
              user: { name, password, domain_id: 'default', default_project_id: projectId },
            })
          ).json as {
            user: { id: string };
          }
        ).user.id;
        await call('PUT', `/projects/${projectId}/users/${userId}/roles/${roleId(role)}`);
        return userId;
      };

      const serviceProject = await createProject('service');
      await createUser('glance', glanceServicePassword, serviceProject, 'admin');
      const imageService = (
        (await call('POST', '/services', { service: { type: 'image', name: 'glance' } })).json as {
          service: { id: string };
        }
      ).service.id;
      for (const [i, region] of regions.entries()) {
        if (i > 0) await call('POST', '/regions', { region: { id: region } });
        for (const iface of ['public', 'internal']) {
          await call('POST', '/endpoints', {
            endpoint: { service_id: imageService, interface: iface, url: glanceUrls[i], region_id: region },
          });
        }
      }

      const account = async (projectName: string, username: string, password: string): Promise<ProjectAccount> => {
        const projectId = await createProject(projectName);
        const userId = await createUser(username, password, projectId, 'member');
        const own = await passwordToken(keystoneUrl, { username, password, projectName });
        // Only the user itself may create its application credentials.
        const created = (
          await keystoneCall(keystoneUrl, 'POST', `/users/${userId}/application_credentials`, own, {
            application_credential: { name: `snf-vmcatcher-${projectName}`, description: 'snf-vmcatcher tests' },
          })
        ).json as { application_credential: { id: string; secret: string } };
        return {
          projectName,
          projectId,
          username,
          userId,
          password,
          appCredentialId: created.application_credential.id,
          appCredentialSecret: created.application_credential.secret,
        };
      };
      return {
        demo: await account('demo', 'demo', 'demo-user-pw'),
        other: await account('other', 'other', 'other-user-pw'),
      };
    });

    await glancesStarted;
    timings.total = Math.round(performance.now() - started) / 1000;

    return {
      dir,
      keystoneUrl,
      glanceUrl,
      glances,
      admin,
      ...accounts,
      timings,
      token: (u) => passwordToken(keystoneUrl, u),
      async revokeToken(token) {
        const adminToken = await passwordToken(keystoneUrl, admin);
        await keystoneCall(keystoneUrl, 'DELETE', '/auth/tokens', adminToken, undefined, { 'x-subject-token': token });
      },
      glanceLog: () => readFile(path.join(dir, 'glance-api.log'), 'utf8'),
      stop,
    };
  } catch (err) {
    // Nothing may start after the clean-up: a glance-api still starting is waited for first.
    await glancesStarted?.catch(() => undefined);
    await stop();
    throw err;
  }
}
