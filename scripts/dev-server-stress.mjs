// Checks that a Temporal dev server survives calls cancelled mid-query (see scripts/temporal-cli/go.mod):
// 24 loops call it with deadlines of 1-21 ms (list, count, describe, history, start, signal) while a
// health check every second lists and describes (10 s deadline). Exits 1 when a health check failed.
//
//   temporal server start-dev --headless --port 7300 &
//   node scripts/dev-server-stress.mjs 127.0.0.1:7300 45
//
// Measured on the 2-core machine, 45 s each: the CLI v1.5.1 as `go install` builds it (modernc.org/sqlite
// v1.34.1) answered 2 health checks and failed 4 (no answer within 10 s; 4,706 "interrupted (9)"
// lines in the server's log); built from scripts/temporal-cli/, 42 of 42 and none in its log.
import { Client, Connection } from '@temporalio/client';

const [address = '127.0.0.1:7233', seconds = '45'] = process.argv.slice(2);
const connection = await Connection.connect({ address });
const client = new Client({ connection });
const service = connection.workflowService;
const namespace = 'default';
const taskQueue = `stress-${Date.now()}`; // no worker: the workflows stay open
const ids = [];
for (let i = 0; i < 100; i++)
  ids.push((await client.workflow.start('idle', { taskQueue, workflowId: `${taskQueue}-${i}` })).workflowId);

const any = (items) => items[Math.floor(Math.random() * items.length)];
const calls = [
  () => service.listWorkflowExecutions({ namespace, pageSize: 100 }),
  () => service.countWorkflowExecutions({ namespace }),
  () => service.describeWorkflowExecution({ namespace, execution: { workflowId: any(ids) } }),
  () => service.getWorkflowExecutionHistory({ namespace, execution: { workflowId: any(ids) } }),
  () => client.workflow.start('idle', { taskQueue, workflowId: `${taskQueue}-${Math.random()}` }),
  () => client.workflow.getHandle(any(ids)).signal('poke'),
];
let stop = false;
let cancelled = 0;
const loops = Array.from({ length: 24 }, async () => {
  while (!stop) {
    await connection.withDeadline(Date.now() + 1 + Math.random() * 20, any(calls)).catch(() => cancelled++);
  }
});

let healthy = 0;
const failures = [];
for (const end = Date.now() + Number(seconds) * 1000; Date.now() < end;) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  try {
    // A broken server may not answer at all: 10 s is long enough for a healthy one.
    await connection.withDeadline(Date.now() + 10_000, async () => {
      await service.listWorkflowExecutions({ namespace, pageSize: 5 });
      await client.workflow.getHandle(any(ids)).describe();
    });
    healthy++;
  } catch (err) {
    failures.push(String(err).slice(0, 200));
  }
}
stop = true;
// A broken server may never answer the loops' last calls: do not wait for them.
await Promise.race([Promise.all(loops), new Promise((resolve) => setTimeout(resolve, 5000))]);
console.log(JSON.stringify({ healthy, failed: failures.length, cancelledCalls: cancelled, firstFailure: failures[0] }));
process.exit(failures.length ? 1 : 0);
