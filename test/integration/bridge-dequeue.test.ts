import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../support/cli.js';
import { deleteTopology, takeAll, uniqueTopology, writeConf } from '../support/rabbit.js';
import {
  publishBodies,
  queueDepth,
  registerBody,
  runsByWorkflowId,
  spawnCli,
  temporalClient,
  uniqueId,
  waitFor,
  type CliProcess,
} from '../support/bridge.js';

describe('dequeue (one message) and drain-queue', () => {
  const topology = uniqueTopology('bridge-dequeue');
  const taskQueue = uniqueId('bridge-dequeue-tq');
  let dir: string;
  let conf: string;
  let temporal: Awaited<ReturnType<typeof temporalClient>>;
  let worker: CliProcess | undefined;
  const env = () => ({ TEMPORAL_TASK_QUEUE: taskQueue, SNF_VMCATCHER_WORKING_FOLDER: path.join(dir, 'work') });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'bridge-dequeue-'));
    conf = await writeConf(topology, `spool { folder = "${dir}/spool" }`);
    temporal = await temporalClient();
  });
  afterAll(async () => {
    await worker?.stop();
    await temporal?.close();
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  test('an empty queue exits 0 and says so', async () => {
    const result = await runCli(['dequeue', '-conf', conf], { env: env() });
    expect(result.stdout).toContain(`Queue '${topology.queue}' is empty`);
    expect(result.exitCode).toBe(0);
  });

  test('one message: its workflow is started with the handler and options given, and the message is acked', async () => {
    const listId = uniqueId('dequeue-list');
    await publishBodies(topology, [registerBody(listId, 1), registerBody(listId, 2)]);
    const result = await runCli(
      [
        'dequeue',
        '-conf',
        conf,
        '-handler',
        'gr.grnet.egi.vmcatcher.image.handler.JustLogHandler',
        '-kamaki-cloud',
        'grnet',
        '-insecure-SSL',
      ],
      { env: env() },
    );
    expect(result.stderr).not.toMatch(/unexpected/);
    expect(result.stdout).toMatch(/Delivered the event to workflow image:log:\S+, which runs registerImage/);
    expect(result.exitCode).toBe(0);
    expect(await queueDepth(topology.queue)).toBe(1); // one taken, one left
    const runs = await waitFor(
      'the workflow',
      () => runsByWorkflowId(temporal.client, listId),
      (m) => m.size === 1,
      20_000,
    );
    const [workflowId] = [...runs.keys()];
    const history = await temporal.client.workflow.getHandle(workflowId).fetchHistory();
    // The event travels as the signal to the image revision's workflow.
    const signalled = history.events?.find(
      (e) => e.workflowExecutionSignaledEventAttributes,
    )?.workflowExecutionSignaledEventAttributes;
    const data = signalled?.input?.payloads?.[0]?.data;
    const input = data ? Buffer.from(data).toString('utf8') : '';
    expect(input).toContain('JustLogHandler');
    expect(input).toContain('grnet');
    expect(input).toContain('insecureSsl');
    await takeAll(topology.queue);
  });

  test('an invalid message is moved to the dead-letter queue with its reason, and dequeue exits 1', async () => {
    await publishBodies(topology, ['{"VMCATCHER_EVENT_HV_URI": "http://h/x.img"}']);
    const result = await runCli(['dequeue', '--conf', conf], { env: env() });
    expect(result.stderr).toMatch(
      /not a valid event \(missing-key: VMCATCHER_EVENT_DC_IDENTIFIER is required\); moved to the dead-letter queue/,
    );
    expect(result.exitCode).toBe(1);
    expect(await queueDepth(topology.queue)).toBe(0);
    const dead = await takeAll(topology.deadLetterQueue);
    expect(dead.map((m) => m.properties.headers?.['x-snf-vmcatcher-reason'])).toEqual(['missing-key']);
  });

  test('an unknown --handler is a usage error naming the option', async () => {
    const result = await runCli(['dequeue', '--conf', conf, '--handler', 'com.example.Nope'], { env: env() });
    expect(result.stderr).toMatch(/--handler 'com.example.Nope' is not a known handler/);
    expect(result.exitCode).toBe(2);
  });

  test('an unreachable broker fails after a bounded number of attempts with one clear line, exit 1', async () => {
    const badConf = await writeConf(topology, '', ['127.0.0.1:1']);
    const started = Date.now();
    const result = await runCli(['dequeue', '--conf', badConf, '--sleep-millis', '100'], {
      env: env(),
      timeoutMs: 30_000,
    });
    expect(result.stderr).toMatch(/cannot connect to RabbitMQ .*connection refused.*gave up after 3 attempts/);
    expect(result.exitCode).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  test('drain-queue removes every message and prints the count', async () => {
    await publishBodies(topology, [
      '{"VMCATCHER_EVENT_DC_IDENTIFIER": "a"}',
      'not json',
      registerBody('drain', 1),
      registerBody('drain', 2),
      registerBody('drain', 3),
    ]);
    const result = await runCli(['drain-queue', '-conf', conf], { env: env() });
    expect(result.stdout).toBe('Drained 5 messages');
    expect(result.exitCode).toBe(0);
    expect(await queueDepth(topology.queue)).toBe(0);
  });

  // Needs the lead's worker: the ThrowingHandler workflow runs and fails for real.
  test('dequeue --wait on a message for the throwing handler exits non-zero and the message stays on the queue', async () => {
    worker = spawnCli(['worker', '--conf', conf], env(), 'worker');
    const listId = uniqueId('throwing-list');
    await publishBodies(topology, [registerBody(listId, 1)]);
    const result = await runCli(
      ['dequeue', '--conf', conf, '--handler', 'gr.grnet.egi.vmcatcher.image.handler.ThrowingHandler', '--wait'],
      {
        env: env(),
        timeoutMs: 90_000,
      },
    );
    expect(result.stdout).toMatch(/Delivered the event to workflow image:throwing:\S+, which runs registerImage/);
    expect(result.stderr).toMatch(/workflow \S+ failed: .*; the message is back on the queue/);
    expect(result.exitCode).toBe(1);
    const back = await takeAll(topology.queue);
    expect(back.map((m) => m.content.toString('utf8'))).toEqual([registerBody(listId, 1)]);
    const runs = await runsByWorkflowId(temporal.client, listId);
    const [workflowId] = [...runs.keys()];
    const description = await temporal.client.workflow.getHandle(workflowId).describe();
    expect(description.status.name).toBe('FAILED');
  });
});
