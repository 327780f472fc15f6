import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Client, Connection, type ScheduleDescription } from '@temporalio/client';
import { jest } from '@jest/globals';
import { subscriptionScheduleId } from '../../subscriptions/schedules.js';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { createTestPki, type TestPki, type TestSigner } from '../support/test-pki.js';

const LIST_ID = 'e2e-run-timeout-list';
/**
 * The first run's timeout: long enough that a machine where each CLI call takes seconds still sees
 * the run in progress (`sync-now`, then `subscriptions` polled), short enough to wait for.
 */
const FIRST_TIMEOUT = '30s';
const FIRST_TIMEOUT_MS = 30_000;

/**
 * A schedule cannot jam: a sync whose read hangs (a list server that does not answer) is timed
 * out by the server after the subscription's runTimeout, `subscriptions` shows it running (for
 * how long, when it times out) and then timed out, and a run triggered meanwhile starts once it
 * has timed out, and succeeds. A real worker, the real CLI and the Temporal dev server; the
 * timeout scaled down to seconds. No durations are asserted, only the order Temporal guarantees.
 */
// Each step may wait for a run to time out, and a busy machine is slow to start the CLI.
jest.setTimeout(180_000);

describe('subscriptions: a stuck sync run times out and the next run starts', () => {
  let dir: string;
  let pki: TestPki;
  let publisher: TestSigner;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let worker: ServiceProcess;
  let connection: Connection;
  let client: Client;
  let conf: string;
  let base: string;
  let taskQueue: string;
  let server: http.Server;
  let listUrl: string;
  let list: Buffer;
  /** Requests for the list wait here until the test opens the gate. */
  let open = false;
  const waiting: http.ServerResponse[] = [];
  let listRequests = 0;

  const cli = (args: string[], file = conf) =>
    runCli([...args, '--conf', file], { env: { TEMPORAL_TASK_QUEUE: taskQueue }, timeoutMs: 180_000 });
  const subscription = (runTimeout: string) =>
    `subscriptions = [ { url = "${listUrl}", every = 8760h, runTimeout = "${runTimeout}", cloud = "e2e", endorser { dn = "${publisher.dn}", ca = "${pki.caDn}" } } ]\n`;
  const schedule = () => client.schedule.getHandle(subscriptionScheduleId(listUrl));
  const runs = async (description?: ScheduleDescription) =>
    Promise.all(
      (description ?? (await schedule().describe())).info.recentActions.map(async ({ action }) =>
        client.workflow.getHandle(action.workflow.workflowId, action.workflow.firstExecutionRunId).describe(),
      ),
    );
  /**
   * This list's part of `subscriptions`: the command lists every subscription schedule on the
   * server, and other test files running at the same time have theirs.
   */
  const ownBlock = (stdout: string) => {
    const lines = stdout.split('\n');
    const start = lines.findIndex((l) => l.startsWith(`${listUrl} `));
    if (start < 0) return '';
    const end = lines.findIndex((l, i) => i > start && !l.startsWith(' '));
    return lines.slice(start, end < 0 ? undefined : end).join('\n');
  };
  /** Runs `subscriptions` until this list's part matches every pattern (the runs move on their own), and returns it. */
  const subscriptionsShowing = async (patterns: RegExp[], what: string) => {
    const deadline = Date.now() + 90_000;
    let last = '';
    for (;;) {
      const r = await cli(['subscriptions']);
      expect(r.exitCode).toBe(0);
      last = ownBlock(r.stdout);
      if (patterns.every((p) => p.test(last))) return last;
      if (Date.now() > deadline) throw new Error(`\`subscriptions\` never showed ${what}; it last said:\n${last}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-run-timeout-'));
    pki = await createTestPki('Run timeout CA');
    publisher = await pki.issue('appdb.example.org');
    server = http.createServer((req, res) => {
      listRequests++;
      if (open) res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(list);
      else waiting.push(res); // never answered until the gate opens: the read hangs
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    listUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/image.list`;
    list = await pki.sign(
      JSON.stringify({
        'hv:imagelist': {
          'dc:identifier': LIST_ID,
          'dc:title': 'E2E run timeout list',
          'dc:date:created': '2024-01-01T00:00:00Z',
          'dc:date:expires': '2499-01-01T00:00:00Z',
          'hv:version': '1',
          'hv:endorser': {
            'hv:x509': { 'dc:creator': 'test', 'hv:ca': pki.caDn, 'hv:dn': publisher.dn, 'hv:email': 'a@b.c' },
          },
          'hv:images': [],
        },
      }),
      publisher,
    );
    cloud = await fakeCloud(dir);
    taskQueue = uniqueTaskQueue('run-timeout');
    conf = path.join(dir, 'application.conf');
    // A hung read waits far longer than the run may take: only the run timeout ends it.
    base = `worker {\n  workingFolder = "${dir}/work"\n  heartbeatTimeoutMs = 3000\n}\nsecurity {\n  caPath = "${pki.caDir}"\n  readTimeoutMs = 600000\n}\n${cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "e2e"')}`;
    await writeFile(conf, `${base}\n${subscription(FIRST_TIMEOUT)}`);
    worker = await startService(['worker', '--conf', conf], { env: { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env } });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
  }, 180_000);

  afterAll(async () => {
    open = true;
    for (const res of waiting) res.destroy();
    await worker?.stop();
    if (client)
      await schedule()
        .delete()
        .catch(() => undefined);
    if (server)
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    await connection?.close();
    await pki?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  test("the worker's schedule starts its runs with the subscription's runTimeout", async () => {
    const description = await schedule().describe();
    expect(description.action.type === 'startWorkflow' && description.action.workflowRunTimeout).toBe(FIRST_TIMEOUT_MS);
  });

  test('a run whose read hangs shows as running, with when it times out', async () => {
    const r = await cli(['sync-now', '--url', listUrl]);
    expect(r.exitCode).toBe(0);
    const shown = await subscriptionsShowing([/running: since /], 'the run in progress');
    expect(shown).toMatch(
      /running: since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, for \d+s, times out at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(runTimeout 30s\)/,
    );
    expect(shown).toContain('last run: none finished yet');
    const [run] = await runs();
    expect(run.status.name).toBe('RUNNING');
    expect(waiting.length).toBeGreaterThanOrEqual(1); // the read reached the server and waits
  });

  test('a changed runTimeout updates the schedule (`subscriptions apply`); the run in progress keeps its own', async () => {
    await writeFile(conf, `${base}\n${subscription('10m')}`);
    const r = await cli(['subscriptions', 'apply']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`updated ${subscriptionScheduleId(listUrl)}`);
    const description = await schedule().describe();
    expect(description.action.type === 'startWorkflow' && description.action.workflowRunTimeout).toBe(600_000);
    const again = await cli(['subscriptions', 'apply']);
    expect(again.stdout).toContain(`unchanged ${subscriptionScheduleId(listUrl)}`);
  });

  test('a run triggered while the stuck one runs starts once it timed out; `subscriptions` shows the timeout', async () => {
    expect((await cli(['sync-now', '--url', listUrl])).exitCode).toBe(0);
    const shown = await subscriptionsShowing(
      [/running: since .*\(runTimeout 10m\)/, /last run: .* TIMED_OUT: timed out after 30s \(runTimeout\)/],
      'the first run timed out and the second one running',
    );
    expect(shown).toContain("the schedule's next run starts at its time");
    const [first, second] = await runs();
    expect(first.status.name).toBe('TIMED_OUT');
    expect(second.status.name).toBe('RUNNING');
    // One run at a time: the second started only once the first had closed.
    expect(second.startTime.getTime()).toBeGreaterThanOrEqual(first.closeTime!.getTime());
  });

  test('once the list answers, the run in progress completes; `subscriptions` shows it, and the timed-out run before it', async () => {
    open = true;
    for (const res of waiting.splice(0)) if (!res.destroyed) res.writeHead(200).end(list);
    const shown = await subscriptionsShowing([/last run: .* COMPLETED/], 'the second run completed');
    expect(shown).toMatch(/list e2e-run-timeout-list version 1; 0 to register; 0 to expire; 0 unchanged/);
    expect(shown).toMatch(/earlier: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d TIMED_OUT after 30s/);
    expect(shown).not.toContain('running: since');
    const json = await cli(['subscriptions', '--json']);
    // One object per subscription schedule on the server; other test files have theirs.
    const entries = json.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { url: string });
    const entry = entries.find((e) => e.url === listUrl);
    expect(entry).toMatchObject({
      runTimeoutMs: 600_000,
      lastRun: { status: 'COMPLETED', runTimeoutMs: 600_000 },
      earlierRunsNotCompleted: [{ status: 'TIMED_OUT', runTimeoutMs: FIRST_TIMEOUT_MS }],
    });
    expect(listRequests).toBeGreaterThanOrEqual(2);
  });
});
