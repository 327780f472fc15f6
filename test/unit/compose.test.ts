/**
 * No Docker engine runs on the build machines, so the stack is checked statically: the compose
 * file against the Compose Specification schema (the copy dclint ships, validated with ajv),
 * the services' images, health checks and dependencies, the snf-vmcatcher commands they run
 * (against the real CLI, run from its sources), their environment (against core/config.ts), and the
 * Dockerfile's base image.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { ENV_OVERRIDES, loadConfig } from '../../core/config.js';
import { SEARCH_ATTRIBUTES } from '../../core/workflow-contract.js';
import { ROOT, runCliFromSource } from '../support/cli.js';
import { versions } from '../support/production-temporal.js';

interface Healthcheck {
  test?: string | string[];
  disable?: boolean;
}
interface Service {
  image?: string;
  build?: string | { context: string; dockerfile?: string };
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string | number | null> | string[];
  volumes?: Array<string | { source?: string; target: string }>;
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: Healthcheck;
  ports?: unknown[];
  restart?: string;
}
interface Compose {
  services: Record<string, Service>;
}

const require = createRequire(import.meta.url);
const composeText = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8');
// `merge: true` resolves the `<<: *anchor` keys as Compose does.
const compose = parseYaml(composeText, { merge: true }) as Compose;
const services = Object.entries(compose.services);
const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');

/** The Compose Specification JSON schema as dclint ships it (not exported: read by path). */
function composeSchemaValidator(): ValidateFunction {
  const schemaPath = path.join(path.dirname(require.resolve('dclint/package.json')), 'schemas/compose.schema.json');
  const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as Record<string, unknown>;
  // It names draft-07 by its https address; ajv registers draft-07 under the canonical http one
  // (dclint itself rewrites it the same way before validating).
  schema.$schema = 'http://json-schema.org/draft-07/schema#';
  // The schema carries a few non-standard annotations (e.g. `deprecated`); strict mode would refuse them.
  const ajv = new Ajv({ allErrors: true, strict: false });
  return ajv.compile(schema);
}

const dependsOn = (svc: Service): Record<string, { condition?: string }> =>
  Array.isArray(svc.depends_on) ? Object.fromEntries(svc.depends_on.map((d) => [d, {}])) : (svc.depends_on ?? {});

const asArgs = (value: string | string[] | undefined): string[] =>
  value === undefined ? [] : Array.isArray(value) ? value : value.split(/\s+/).filter(Boolean);

const envNames = (svc: Service): string[] =>
  Array.isArray(svc.environment) ? svc.environment.map((e) => e.split('=')[0]) : Object.keys(svc.environment ?? {});

/** Services that run our image: built from the Dockerfile, or the image the build produces. */
const ourImage = (compose.services.worker?.image ?? '') as string;
const snfServices = services.filter(
  ([, svc]) => svc.build !== undefined || (svc.image !== undefined && svc.image === ourImage),
);

/** One-shot jobs: something waits for them to complete successfully. */
const oneShot = new Set(
  services.flatMap(([, svc]) =>
    Object.entries(dependsOn(svc))
      .filter(([, dep]) => dep.condition === 'service_completed_successfully')
      .map(([name]) => name),
  ),
);

/** `FROM` lines with `ARG` defaults substituted, per stage. */
function baseImages(text: string): string[] {
  const args = new Map<string, string>();
  const stages = new Set<string>();
  const bases: string[] = [];
  for (const line of text.split('\n').map((l) => l.trim())) {
    const arg = /^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)/.exec(line);
    if (arg) args.set(arg[1], arg[2]);
    const from = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) {
      const image = from[1].replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_m, name: string) => args.get(name) ?? '');
      if (!stages.has(image)) bases.push(image);
      if (from[2]) stages.add(from[2]);
    }
  }
  return bases;
}

describe('docker-compose.yml', () => {
  it('is valid against the Compose Specification schema', () => {
    const validate = composeSchemaValidator();
    const valid = validate(compose);
    expect(validate.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
  });

  it('the schema check rejects a compose file with a misspelt service key (so the check above can fail)', () => {
    const validate = composeSchemaValidator();
    const broken = structuredClone(compose);
    (broken.services.worker as Record<string, unknown>).healthcheck = { tset: ['CMD', 'true'] };
    expect(validate(broken)).toBe(false);
  });

  it('runs the whole stack: PostgreSQL, Temporal with admin-tools and UI, RabbitMQ, worker and bridge', () => {
    const images = services.map(([, svc]) => svc.image ?? '');
    expect(images.some((i) => i.startsWith('postgres:'))).toBe(true);
    expect(images.some((i) => i.startsWith('temporalio/server:'))).toBe(true);
    expect(images.some((i) => i.startsWith('temporalio/admin-tools:'))).toBe(true);
    expect(images.some((i) => i.startsWith('temporalio/ui:'))).toBe(true);
    expect(images.some((i) => /^rabbitmq:[^:]*management/.test(i))).toBe(true);
    // The deprecated all-in-one image is not used.
    expect(images.some((i) => i.startsWith('temporalio/auto-setup'))).toBe(false);
    const commands = snfServices.map(([, svc]) => asArgs(svc.command).join(' '));
    expect(commands).toEqual(expect.arrayContaining(['worker', 'dequeue --server']));
  });

  it.each(services)('service %s has an image or a build', (_name, svc) => {
    expect(svc.image !== undefined || svc.build !== undefined).toBe(true);
    if (svc.build !== undefined) {
      const build = typeof svc.build === 'string' ? { context: svc.build } : svc.build;
      expect(existsSync(path.join(ROOT, build.context, build.dockerfile ?? 'Dockerfile'))).toBe(true);
    }
  });

  it.each(services)('service %s has a health check, or is a one-shot job something waits for', (name, svc) => {
    if (oneShot.has(name)) {
      expect(svc.healthcheck).toBeUndefined();
      expect(svc.restart ?? 'no').toMatch(/^(no|on-failure(:\d+)?)$/);
      return;
    }
    expect(svc.healthcheck?.disable).not.toBe(true);
    const test = asArgs(svc.healthcheck?.test);
    expect(['CMD', 'CMD-SHELL']).toContain(test[0]);
    expect(test.length).toBeGreaterThan(1);
  });

  it('every dependency names an existing service, and health conditions point at services with a health check', () => {
    for (const [, svc] of services) {
      for (const [dep, { condition }] of Object.entries(dependsOn(svc))) {
        expect(compose.services[dep]).toBeDefined();
        if (condition === 'service_healthy') expect(compose.services[dep].healthcheck?.test).toBeDefined();
      }
    }
  });

  it('publishes the Temporal Web UI', () => {
    const ui = services.find(([, svc]) => svc.image?.startsWith('temporalio/ui:'));
    expect(ui?.[1].ports?.map(String)).toEqual(expect.arrayContaining([expect.stringMatching(/:8080$/)]));
  });

  it('mounts files that exist in the repository', () => {
    for (const [, svc] of services) {
      for (const volume of svc.volumes ?? []) {
        const source = typeof volume === 'string' ? volume.split(':')[0] : (volume.source ?? '');
        if (source.startsWith('./')) expect([source, existsSync(path.join(ROOT, source))]).toEqual([source, true]);
      }
    }
  });

  it('registers exactly the search attributes the workflows set, with their types, from the one list both stacks read', () => {
    const listed = readFileSync(path.join(ROOT, 'docker/temporal/search-attributes'), 'utf8')
      .split('\n')
      .filter((line) => line.trim() && !line.startsWith('#'))
      .map((line) => {
        const [name, type] = line.trim().split(/\s+/);
        return { name, type };
      });
    expect(listed.sort((a, b) => a.name.localeCompare(b.name))).toEqual(
      [...SEARCH_ATTRIBUTES].sort((a, b) => a.name.localeCompare(b.name)),
    );
    for (const script of ['docker/temporal/create-namespace.sh', 'scripts/stack.sh']) {
      const text = readFileSync(path.join(ROOT, script), 'utf8');
      expect([
        script,
        /search-attributes/.test(text),
        /ImageStage|ImageIdentifier/.test(text.replace(/^#.*$/gm, '')),
      ]).toEqual([script, true, false]);
    }
  });

  it('sets only environment variables that snf-vmcatcher reads', () => {
    const known = new Set([...ENV_OVERRIDES.map((o) => o.env), 'SNF_VMCATCHER_CONF', 'SNF_VMCATCHER_LOG_LEVEL']);
    for (const [name, svc] of snfServices) {
      const unknown = envNames(svc).filter((e) => !known.has(e));
      expect([name, unknown]).toEqual([name, []]);
    }
  });

  it('mounts an application.conf that loads with the environment the services set', async () => {
    const { config } = await loadConfig({
      file: path.join(ROOT, 'docker/application.conf'),
      env: {
        TEMPORAL_ADDRESS: 'temporal:7233',
        SNF_VMCATCHER_RABBITMQ_SERVERS: 'rabbitmq:5672',
        SNF_VMCATCHER_RABBITMQ_PASSWORD: 'from-env',
      },
    });
    expect(config.temporal.address).toBe('temporal:7233');
    expect(config.rabbitmq.servers).toEqual(['rabbitmq:5672']);
    expect(config.rabbitmq.password).toBe('from-env');
    expect(config.security.signaturePolicy).toBe('require');
  });

  it.each(snfServices.map(([name, svc]) => [name, asArgs(svc.command)] as const))(
    'service %s runs an snf-vmcatcher command that exists: %j',
    async (_name, command) => {
      expect(command.length).toBeGreaterThan(0);
      const result = await runCliFromSource([...command, '--help']);
      expect(result.exitCode).toBe(0);
      expect(result.stdout).toMatch(/Usage|\$ /);
    },
  );
});

describe('Dockerfile', () => {
  it('builds on a Debian-based Node 20 image in every stage (the Temporal native bridge has no musl build)', () => {
    const bases = baseImages(dockerfile);
    expect(bases.length).toBeGreaterThanOrEqual(1);
    for (const base of bases) expect(base).toMatch(/^node:20(\.\d+)*-(bookworm|bullseye|trixie)(-slim)?$/);
  });

  it('is multi-stage: builds with dev dependencies, runs with production dependencies and dist/', () => {
    expect(dockerfile).toMatch(/^FROM .* AS build$/m);
    expect(dockerfile).toMatch(/npm run build/);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/COPY --from=build \S*dist/);
  });

  it('copies into the build stage every script that `npm run build` runs (the CLI bundler among them)', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: { build: string } };
    const scripts = [...pkg.scripts.build.matchAll(/\bnode (\S+)/g)]
      .map((m) => m[1])
      .filter((file) => !file.startsWith('dist/'));
    expect(scripts).toContain('scripts/bundle-cli.mjs');
    const buildStage = dockerfile.slice(0, dockerfile.search(/^FROM (?!.* AS build$)/m));
    for (const file of scripts)
      expect(buildStage).toMatch(new RegExp(`^COPY \\S*${file.replace(/[.]/g, '\\.')}\\b`, 'm'));
  });

  it('installs the programs the pipeline runs', () => {
    const install = /apt-get install[^\n]*(?:\\\n[^\n]*)*/.exec(dockerfile)?.[0] ?? '';
    for (const pkg of ['qemu-utils', 'xz-utils', 'bzip2', 'openssl', 'sudo']) expect(install).toContain(pkg);
  });

  it('starts the snf-vmcatcher CLI', () => {
    expect(dockerfile).toMatch(/^ENTRYPOINT \[.*"node", "[^"]*bin\/snf-vmcatcher\.js"\]$/m);
  });
});

/** The default of a `${VAR:-default}` image tag. */
const defaultTag = (image: string | undefined): string =>
  /:\$\{[A-Z_]+:-([^}]+)\}$/.exec(image ?? '')?.[1] ?? (image ?? '').split(':')[1] ?? '';
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
/** The shell script's text without its comments. */
const code = (file: string) => read(file).replace(/^\s*#.*$/gm, '');

describe('one source of truth for the Temporal server: compose and the native production stack', () => {
  const { TEMPORAL_SERVER_VERSION, TEMPORAL_UI_VERSION } = versions();
  const server = compose.services.temporal;
  const envOf = (svc: Service) => (Array.isArray(svc.environment) ? {} : (svc.environment ?? {}));
  // npm test's set-up does not build the production binaries (CI's does): built here if missing.
  it('pins the server, admin-tools (whose temporal-sql-tool carries the schema) and Web UI of docker/temporal/versions', () => {
    expect(TEMPORAL_SERVER_VERSION).toMatch(/^\d+\.\d+\.\d+$/);
    expect(defaultTag(server.image)).toBe(TEMPORAL_SERVER_VERSION);
    const adminTools = services.filter(([, svc]) => svc.image?.startsWith('temporalio/admin-tools:'));
    expect(adminTools.length).toBe(2);
    for (const [, svc] of adminTools)
      expect(defaultTag(svc.image)).toMatch(new RegExp(`^${TEMPORAL_SERVER_VERSION.replace(/\./g, '\\.')}(-|$)`));
    const ui = services.find(([, svc]) => svc.image?.startsWith('temporalio/ui:'));
    expect(defaultTag(ui?.[1].image)).toBe(TEMPORAL_UI_VERSION);
    expect(code('scripts/build-temporal-server.sh')).toMatch(/docker\/temporal\/versions/);
  });

  it('runs the same set-up scripts and server configuration in compose as in the native stack and the tests', () => {
    // compose: the project's docker/temporal folder, mounted into each Temporal container.
    const mounted = (svc: Service) =>
      (svc.volumes ?? [])
        .map(String)
        .find((v) => v.startsWith('./docker/temporal:'))
        ?.split(':')[1];
    expect(asArgs(server.entrypoint)).toEqual(['/bin/sh', `${mounted(server)}/start-server.sh`]);
    const job = (script: string) =>
      services.find(([, svc]) => asArgs(svc.command).join(' ') === `${mounted(svc)}/${script}`);
    expect(job('setup-postgres.sh')?.[0]).toBe('temporal-admin-tools');
    expect(job('create-namespace.sh')?.[0]).toBe('temporal-create-namespace');
    // The native stack and the test support run those very scripts.
    for (const file of ['scripts/stack.sh', 'test/support/production-temporal.ts']) {
      const text = code(file);
      for (const script of ['setup-postgres.sh', 'start-server.sh', 'create-namespace.sh'])
        expect([file, script, text.includes(script)]).toEqual([file, script, true]);
    }
    // start-server.sh reads the configuration and the dynamic config beside it, nothing of the image's.
    const start = code('docker/temporal/start-server.sh');
    expect(start).toMatch(/--config "\$here\/config" --env production/);
    expect(start).toMatch(/\$here\/dynamicconfig\/production-sql\.yaml/);
    expect(existsSync(path.join(ROOT, 'docker/temporal/config/production.yaml'))).toBe(true);
    expect(Object.keys(envOf(server))).not.toContain('DYNAMIC_CONFIG_FILE_PATH');
  });

  it("sets the schema up from the one embedded in temporal-sql-tool (the server version's), not from a folder of an image", () => {
    const setup = code('docker/temporal/setup-postgres.sh');
    expect(setup).toMatch(/update-schema --schema-name "\$schema"/);
    expect(setup).toMatch(/postgresql\/v12\/\$\{pair#\*:\}/);
    expect(setup).toMatch(/:temporal"/);
    expect(setup).toMatch(/:visibility"/);
    expect(setup).not.toMatch(/\/etc\/temporal\/schema|--schema-dir|-d "/);
  });
});
