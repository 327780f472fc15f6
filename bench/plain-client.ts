/**
 * The reference of the bridge benchmark, run as a process of its own (`node --import tsx`): a
 * plain Temporal client making the same workflow starts as the bridge (core/starter.ts's
 * signal-with-start, for the same events and registration options) with the same number in
 * flight as the bridge's prefetch, and nothing else: no broker, no acks. Prints one JSON line.
 *
 *   plain-client.ts <temporal address> <task queue> <list id> <events> <concurrency>
 */
import { Client, Connection } from '@temporalio/client';
import { parseConfig } from '../core/config.js';
import { eventFromMessageBody } from '../core/event.js';
import { handlerFromName } from '../core/handlers.js';
import { startWorkflowForEvent } from '../core/starter.js';
import { registrationSite } from '../clouds/index.js';
import { registerBody } from '../test/support/bridge.js';
import { cpuSeconds } from './lib.js';

const [address, taskQueue, listId, eventsArg, concurrencyArg] = process.argv.slice(2);
const events = Number(eventsArg);
const concurrency = Number(concurrencyArg);
const config = parseConfig({ temporal: { address, taskQueue } }, 'bench');
const options = { handler: handlerFromName('JustLogHandler') };
// Parsed before the clock starts: the reference is the starts alone.
const parsed = Array.from({ length: events }, (_, i) => eventFromMessageBody(Buffer.from(registerBody(listId, i))));
const connection = await Connection.connect({ address });
const client = new Client({ connection, namespace: config.temporal.namespace });
await client.workflowService.getSystemInfo({});

const cpuBefore = cpuSeconds(process.pid);
const started = process.hrtime.bigint();
let next = 0;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (next < parsed.length) {
      const event = parsed[next++];
      const result = await startWorkflowForEvent(client, config, event, options, registrationSite(config));
      if (result.outcome !== 'delivered') throw new Error(`event ${event.imageId} was not delivered`);
    }
  }),
);
const ms = Number(process.hrtime.bigint() - started) / 1e6;
const cpu = cpuSeconds(process.pid) - cpuBefore;
await connection.close();
process.stdout.write(`${JSON.stringify({ ms, eventsPerSecond: events / (ms / 1000), cpuSeconds: cpu })}\n`);
