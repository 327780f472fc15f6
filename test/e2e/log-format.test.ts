/**
 * Logs people can read. At a terminal (a real pseudo-terminal, through util-linux
 * `script`), `npm run stack` and the commands show one readable line per event; through a pipe
 * they write JSON lines, and the stack's log files stay JSON. SNF_VMCATCHER_LOG_FORMAT overrides.
 */
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { BIN, ROOT } from '../support/cli.js';
import { deleteTopology, uniqueTopology } from '../support/rabbit.js';
import { uniqueTaskQueue } from '../support/service-process.js';

// eslint-disable-next-line no-control-regex -- colours and the terminal's carriage returns
const TERMINAL_NOISE = /\x1b\[[0-9;]*m|\r/g;
/** A readable line: `[HH:MM:ss.l] LEVEL: …`. */
const READABLE = /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|DEBUG|ERROR): /;

interface Running {
  output(): string;
  /** Whether the command has exited (then its output is all there will be). */
  exited(): boolean;
  /** SIGTERM to the command (not to `script`), then its exit. */
  stop(): Promise<void>;
}

/**
 * Runs `command` (a shell line) on a pseudo-terminal of its own, or through a pipe, collecting what
 * it prints.
 */
function start(command: string, env: Record<string, string | undefined>, terminal: boolean): Running {
  let text = '';
  // Detached: a process group of its own, so whatever is left of it can be ended at the end.
  const proc: ResultPromise = terminal
    ? execa('script', ['-qfec', `exec ${command}`, '/dev/null'], {
        env,
        extendEnv: false,
        reject: false,
        detached: true,
      })
    : execa('sh', ['-c', `exec ${command} 2>&1`], { env, extendEnv: false, reject: false, detached: true });
  proc.stdout?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  proc.stderr?.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return {
    output: () => text.replace(TERMINAL_NOISE, ''),
    exited: () => proc.exitCode !== null || proc.signalCode !== null,
    async stop() {
      if (proc.exitCode === null) {
        // Under `script`, the command is script's child (its own session): signal it by its pid.
        const target = terminal
          ? Number((await execa('pgrep', ['-P', String(proc.pid)], { reject: false })).stdout.split('\n')[0])
          : proc.pid!;
        if (target) process.kill(target, 'SIGTERM');
      }
      // A stack stopped before its trap was set (still in its set-up) leaves its set-up running: end its group.
      const exited = await Promise.race([
        proc.then(() => true),
        new Promise((r) => setTimeout(() => r(false), 60_000)),
      ]);
      if (!exited) process.kill(-proc.pid!, 'SIGKILL');
      await proc;
    },
  };
}

async function until(running: Running, pattern: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(running.output())) {
    if (running.exited() || Date.now() > deadline)
      throw new Error(
        `no ${pattern} ${running.exited() ? 'before it exited' : 'in time'}:\n${running.output().slice(-3000)}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** The environment of a process started as a person would, without the test run's own overrides. */
function baseEnv(extra: Record<string, string>): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  delete env.SNF_VMCATCHER_LOG_LEVEL;
  delete env.SNF_VMCATCHER_LOG_FORMAT;
  return { ...env, ...extra };
}

const topology = uniqueTopology('logs');
let dir: string;

beforeAll(async () => {
  await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
  dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-logs-'));
});

afterAll(async () => {
  await deleteTopology(topology).catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('npm run stack', () => {
  /** A stack of its own: its own dev server and ports, data folder and queue. */
  async function stackEnv(name: string): Promise<Record<string, string | undefined>> {
    const env = baseEnv({
      SNF_VMCATCHER_DATA: path.join(dir, name),
      TEMPORAL_PORT: String(await freePort()),
      TEMPORAL_UI_PORT: String(await freePort()),
      SNF_VMCATCHER_WORKER_METRICS_PORT: '0',
      SNF_VMCATCHER_BRIDGE_METRICS_PORT: '0',
      SNF_VMCATCHER_WORKER_PRODUCT_METRICS_PORT: '0',
      SNF_VMCATCHER_RABBITMQ_QUEUE: topology.queue,
      SNF_VMCATCHER_RABBITMQ_EXCHANGE: topology.exchange,
      SNF_VMCATCHER_RABBITMQ_ROUTING_KEY: topology.routingKey,
    });
    // Its configuration names its own dev server; the test run's would override it.
    delete env.TEMPORAL_ADDRESS;
    delete env.TEMPORAL_TASK_QUEUE;
    return env;
  }

  test('at a terminal: one readable line per event (time, level, message), while data/logs keeps JSON lines', async () => {
    const env = await stackEnv('pty');
    const stack = start(`bash ${path.join(ROOT, 'scripts/stack.sh')}`, env, true);
    try {
      await until(stack, /^\[service\] .*worker started/m, 480_000);
    } finally {
      await stack.stop();
    }
    const service = stack
      .output()
      .split('\n')
      .filter((l) => l.startsWith('[service] '))
      .map((l) => l.slice('[service] '.length));
    expect(service.find((l) => /worker started/.test(l))).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: \[worker\] worker started \{.*"sharedTaskQueue":"snf-vmcatcher"/,
    );
    expect(service.filter((l) => l.startsWith('{'))).toEqual([]);
    const file = (await readFile(path.join(dir, 'pty', 'logs', 'service.log'), 'utf8')).trim().split('\n');
    const parsed = file.map((l) => JSON.parse(l) as { msg: string; level: number });
    expect(parsed.map((l) => l.msg)).toContain('worker started');
  }, 600_000);

  test('through a pipe: the JSON lines, as the log files', async () => {
    const env = await stackEnv('pipe');
    const stack = start(`bash ${path.join(ROOT, 'scripts/stack.sh')}`, env, false);
    try {
      await until(stack, /^\[service\] .*worker started/m, 480_000);
    } finally {
      await stack.stop();
    }
    const started = stack
      .output()
      .split('\n')
      .find((l) => l.startsWith('[service] ') && /worker started/.test(l))!;
    expect(JSON.parse(started.slice('[service] '.length))).toMatchObject({
      level: 30,
      msg: 'worker started',
      part: 'worker',
    });
  }, 600_000);
});

describe('a command', () => {
  const worker = (format?: string) =>
    baseEnv({ TEMPORAL_TASK_QUEUE: uniqueTaskQueue('logs'), ...(format ? { SNF_VMCATCHER_LOG_FORMAT: format } : {}) });
  const command = `node ${BIN} worker --working-folder ${'$'}{TMPDIR:-/tmp}/snf-logs-work`;

  async function firstLine(env: Record<string, string | undefined>, terminal: boolean): Promise<string> {
    const running = start(command, env, terminal);
    try {
      await until(running, /worker started/, 120_000);
    } finally {
      await running.stop();
    }
    return running
      .output()
      .split('\n')
      .find((l) => /worker started/.test(l))!;
  }

  test('at a terminal: readable; SNF_VMCATCHER_LOG_FORMAT=json there: JSON', async () => {
    expect(await firstLine(worker(), true)).toMatch(READABLE);
    expect(JSON.parse(await firstLine(worker('json'), true))).toMatchObject({ msg: 'worker started' });
  }, 300_000);

  test('through a pipe: JSON; SNF_VMCATCHER_LOG_FORMAT=pretty there: readable', async () => {
    expect(JSON.parse(await firstLine(worker(), false))).toMatchObject({ msg: 'worker started' });
    expect(await firstLine(worker('pretty'), false)).toMatch(READABLE);
  }, 300_000);
});
