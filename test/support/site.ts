import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { publishBodies } from './bridge.js';
import { fakeCloud } from './fake-cloud.js';
import { deleteTopology, uniqueTopology, writeConf } from './rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from './service-process.js';

type FakeCloud = Awaited<ReturnType<typeof fakeCloud>>;

export interface SiteStart {
  /**
   * `run`: the bridge and the worker, consuming the site's own RabbitMQ queue (the hook's path);
   * `worker`: the worker alone (`register-now` and subscriptions start workflows directly).
   */
  command: 'run' | 'worker';
  /** HOCON sections after `worker` and `spool` (e.g. a `security` block). */
  conf?: string;
  /** Extra keys of the `synnefo` block (e.g. `prepare = false`). */
  synnefo?: string;
  /** Environment of the service beyond its task queue and the fake cloud's. */
  env?: Record<string, string>;
}

/**
 * One site of an end-to-end test: a temporary folder, the fake Synnefo cloud in it, and once
 * started, its application.conf and the real CLI's `run` or `worker` on a task queue (and, for
 * `run`, a RabbitMQ topology) no other test uses. What the e2e tests of the hook, the queue and
 * `register-now` each set up by hand before.
 */
export class Site {
  readonly topology;
  readonly taskQueue: string;
  /** What `runCli` needs to reach this site's worker and cloud (task queue, fake cloud). */
  readonly env: Record<string, string>;
  conf = '';
  service?: ServiceProcess;

  private constructor(
    readonly dir: string,
    readonly cloud: FakeCloud,
    name: string,
  ) {
    this.topology = uniqueTopology(name);
    this.taskQueue = uniqueTaskQueue(name);
    this.env = { TEMPORAL_TASK_QUEUE: this.taskQueue, ...cloud.env };
  }

  /** The folder and the cloud, before anything runs: a test puts its images in `dir` first. */
  static async create(name: string, cloudName = 'e2e'): Promise<Site> {
    const dir = await mkdtemp(path.join(os.tmpdir(), `snf-${name}-`));
    return new Site(dir, await fakeCloud(dir, cloudName), name);
  }

  /** Writes the configuration and starts the service; resolves once it works (or consumes). */
  async start(opts: SiteStart): Promise<ServiceProcess> {
    const body = `worker { workingFolder = "${this.dir}/work" }
spool { folder = "${this.dir}/spool" }
${opts.conf ?? ''}
${this.cloud.synnefoConf(`cloud = "${this.cloud.cloud}"\n  ${opts.synnefo ?? ''}`)}`;
    if (opts.command === 'run') {
      this.conf = await writeConf(this.topology, body);
    } else {
      this.conf = path.join(this.dir, 'application.conf');
      await writeFile(this.conf, body);
    }
    this.service = await startService([opts.command, '--conf', this.conf], {
      env: { ...this.env, ...opts.env },
      readyPattern: opts.command === 'run' ? /consuming/ : /worker started/,
    });
    return this.service;
  }

  /** Publishes flat messages (vmcatcher's variables) to the site's queue, persistent and confirmed. */
  publish(...bodies: Array<Record<string, string>>): Promise<void> {
    return publishBodies(
      this.topology,
      bodies.map((body) => JSON.stringify(body)),
    );
  }

  images() {
    return this.cloud.images();
  }

  /** Polls `check` until it holds; on time-out the error carries the end of the service's log. */
  async waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}\n${this.service?.log().slice(-4000) ?? '(not started)'}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Stops the service, deletes the topology (if `run` declared one) and the folder. */
  async close(): Promise<void> {
    await this.service?.stop();
    await deleteTopology(this.topology);
    await rm(this.dir, { recursive: true, force: true });
    if (this.conf && !this.conf.startsWith(this.dir))
      await rm(path.dirname(this.conf), { recursive: true, force: true });
  }
}
