/**
 * The production Temporal server for a test or a benchmark: temporal-server (built by
 * scripts/build-temporal-server.sh) on two PostgreSQL databases of its own, set up, started and
 * given its namespace by the very scripts docker-compose.yml runs (docker/temporal/), as
 * `npm run stack -- --production` does.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import net from 'node:net';
import { execa, type ResultPromise } from 'execa';
import { ROOT } from './cli.js';
import { waitForDevServer } from './temporal-server.js';

const TOOLS = process.env.SNF_VMCATCHER_TOOLS ?? path.join(ROOT, '.tools');
export const TEMPORAL_SERVER = path.join(TOOLS, 'bin/temporal-server');
const SCRIPTS = path.join(ROOT, 'docker/temporal');
/** PostgreSQL of every development and CI machine. */
const POSTGRES = { POSTGRES_SEEDS: '127.0.0.1', DB_PORT: '5432', POSTGRES_USER: 'postgres' };

export interface ProductionTemporal {
  /** host:port of the frontend. */
  address: string;
  /** The server's Prometheus endpoint. */
  metricsUrl: string;
  /** The server process's id (while it runs). */
  pid(): number | undefined;
  databases: { temporal: string; visibility: string };
  /** Stops the server (SIGTERM, as `docker compose stop` does); its databases stay. */
  stop(): Promise<void>;
  /** Starts it again on the same databases and ports. */
  start(): Promise<void>;
  /** stop(), then start(), as `docker compose restart` does. */
  restart(): Promise<void>;
  /** Stops the server and drops its databases. */
  destroy(): Promise<void>;
}

/** How long a cold Go build of the server, SQL tool and UI server may take on a loaded 2-core machine. */
export const PRODUCTION_BUILD_TIMEOUT_MS = 30 * 60_000;

/**
 * Builds temporal-server, temporal-sql-tool and temporal-ui-server when they are missing
 * (scripts/build-temporal-server.sh: a few version checks when they are there). `npm test`'s
 * set-up does not build them (CI does, with `scripts/setup.sh --production`), so the tests and
 * benchmarks that run them call this first, in a beforeAll of its own with
 * PRODUCTION_BUILD_TIMEOUT_MS.
 */
export async function ensureProductionTemporalBuilt(): Promise<void> {
  const build = await execa('bash', [path.join(ROOT, 'scripts/build-temporal-server.sh')], {
    reject: false,
    stdin: 'ignore',
    env: { SNF_VMCATCHER_TOOLS: TOOLS },
  });
  if (build.exitCode !== 0)
    throw new Error(
      `scripts/build-temporal-server.sh failed (${build.exitCode}): ${String(build.stderr).slice(-2000)}`,
    );
}

/**
 * A fresh server on databases named `<name>_temporal` and `<name>_visibility` (dropped first if
 * left over), its log appended to `<logDir>/temporal-server.log`.
 */
export async function startProductionTemporal(name: string, logDir: string): Promise<ProductionTemporal> {
  await ensureProductionTemporalBuilt();
  const databases = { temporal: `${name.toLowerCase()}_temporal`, visibility: `${name.toLowerCase()}_visibility` };
  await dropDatabases(databases);
  const ports: Record<string, string> = {};
  for (const key of [
    'FRONTEND_GRPC_PORT',
    'FRONTEND_HTTP_PORT',
    'FRONTEND_MEMBERSHIP_PORT',
    'HISTORY_GRPC_PORT',
    'HISTORY_MEMBERSHIP_PORT',
    'MATCHING_GRPC_PORT',
    'MATCHING_MEMBERSHIP_PORT',
    'WORKER_GRPC_PORT',
    'WORKER_MEMBERSHIP_PORT',
    'METRICS_PORT',
  ]) {
    ports[key] = String(await freeLowPort());
  }
  const address = `127.0.0.1:${ports.FRONTEND_GRPC_PORT}`;
  const metrics = `127.0.0.1:${ports.METRICS_PORT}`;
  const env = {
    ...POSTGRES,
    DBNAME: databases.temporal,
    VISIBILITY_DBNAME: databases.visibility,
    ...ports,
    PROMETHEUS_ENDPOINT: metrics,
    TEMPORAL_SERVER,
    TEMPORAL_ADDRESS: address,
    PATH: `${path.join(TOOLS, 'bin')}:${process.env.PATH}`,
  };
  await mkdir(logDir, { recursive: true });
  const logFile = path.join(logDir, 'temporal-server.log');
  let server: ResultPromise | undefined;

  const startServer = async () => {
    const log = { file: logFile, append: true };
    const proc = execa('sh', [path.join(SCRIPTS, 'start-server.sh')], {
      env,
      reject: false,
      stdin: 'ignore',
      stdout: log,
      stderr: log,
    });
    server = proc;
    const exited = proc.then((r) => {
      throw new Error(`temporal-server exited (${r.exitCode ?? r.signal}) on start`);
    });
    try {
      await Promise.race([waitForDevServer(address, 90_000), exited]);
    } catch (err) {
      proc.kill('SIGKILL');
      const tail = await readFile(logFile, 'utf8').then(
        (t) => t.slice(-3000),
        () => '',
      );
      throw new Error(`${(err as Error).message}\n${logFile}:\n${tail}`);
    }
    void exited.catch(() => undefined);
  };
  const stop = async () => {
    if (!server || server.exitCode !== null) return;
    server.kill('SIGTERM');
    await server;
  };
  // As compose orders it: the schema job, the server, the namespace job.
  await runScript('setup-postgres.sh', env, logFile);
  await startServer();
  await runScript('create-namespace.sh', env, logFile);
  return {
    address,
    metricsUrl: `http://${metrics}/metrics`,
    databases,
    pid: () => server?.pid,
    stop,
    start: startServer,
    async restart() {
      await stop();
      await startServer();
    },
    async destroy() {
      await stop();
      await dropDatabases(databases);
    },
  };
}

/** A free port below 32768: the server stores its membership ports in a smallint column. */
async function freeLowPort(): Promise<number> {
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * 22_000);
    const free = await new Promise<boolean>((resolve) => {
      const probe = net.createServer();
      probe.once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

async function runScript(script: string, env: Record<string, string>, logFile: string): Promise<void> {
  const log = { file: logFile, append: true };
  const result = await execa('sh', [path.join(SCRIPTS, script)], {
    env,
    reject: false,
    stdin: 'ignore',
    stdout: log,
    stderr: log,
    timeout: 180_000,
  });
  if (result.exitCode !== 0)
    throw new Error(`docker/temporal/${script} failed (exit ${result.exitCode}); see ${logFile}`);
}

async function dropDatabases(databases: { temporal: string; visibility: string }): Promise<void> {
  for (const db of Object.values(databases)) {
    await execa('psql', [
      '-h',
      POSTGRES.POSTGRES_SEEDS,
      '-U',
      POSTGRES.POSTGRES_USER,
      '-d',
      'postgres',
      '-qc',
      `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`,
    ]);
  }
}

/** The Web UI server (the one the temporalio/ui image runs) and the folder of its configuration template. */
export const TEMPORAL_UI_SERVER = {
  binary: path.join(TOOLS, 'bin/temporal-ui-server'),
  root: path.join(TOOLS, 'share/temporal-ui', versions().TEMPORAL_UI_VERSION),
};

/**
 * The Web UI server in front of `address`, started as `npm run stack -- --production` starts it
 * (the temporalio/ui image's configuration template), on a free port; its log goes to
 * `<logDir>/temporal-ui.log`. `url` is where a browser (or its API calls, under /api/v1) go.
 */
export async function startWebUi(address: string, logDir: string): Promise<{ url: string; stop(): Promise<void> }> {
  await ensureProductionTemporalBuilt();
  const port = String(await freeLowPort());
  const url = `http://127.0.0.1:${port}`;
  const log = { file: path.join(logDir, 'temporal-ui.log'), append: true };
  const proc = execa(TEMPORAL_UI_SERVER.binary, ['--root', TEMPORAL_UI_SERVER.root, '--env', 'docker', 'start'], {
    env: { TEMPORAL_ADDRESS: address, TEMPORAL_UI_PORT: port, TEMPORAL_CORS_ORIGINS: url },
    reject: false,
    stdin: 'ignore',
    stdout: log,
    stderr: log,
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up = await fetch(`${url}/api/v1/settings`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`temporal-ui-server did not answer on ${url}; see ${log.file}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url,
    async stop() {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

/** docker/temporal/versions: the Temporal versions both production stacks run. */
export function versions(): Record<string, string> {
  const text = readFileSync(path.join(SCRIPTS, 'versions'), 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]),
  );
}
