// Replays recorded workflow histories (Temporal's JSON history format) against the workflow
// code, as a site's running workflows are replayed after an upgrade. No Temporal server is
// needed: the worker's replayer bundles the workflows (TypeScript sources by default, or the
// compiled dist/workflows/index.js) and runs each history's events through them; a workflow that
// now issues other commands than the history recorded fails with a non-determinism error.
// Prints `ok   <file>` or `FAIL <file>: <why>` per history; exits 1 when any failed.
// Usage: node scripts/replay-histories.mjs [--interceptor <module>]... [<folder of *.json histories> [<workflows module> [<workflow type>]]]
// (with a workflow type, only the histories recorded as `<run>.<type>.json`; each --interceptor
// is a workflow interceptor module the worker bundles with the workflows, replayed with them).
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const workflowModules = [];
for (let i = args.indexOf('--interceptor'); i >= 0; i = args.indexOf('--interceptor'))
  workflowModules.push(path.resolve(args.splice(i, 2)[1]));
const folder = path.resolve(args[0] ?? path.join(root, 'test/fixtures/histories'));
// The bundler takes an absolute path only (a relative one is read as a package name).
const workflowsPath = path.resolve(args[1] ?? path.join(root, 'workflows/index.ts'));
Runtime.install({ logger: new DefaultLogger('ERROR') });

// The SDK's own JSON loader (historyFromJSON) fails with "type must be a Type": npm installs
// @temporalio/common and @temporalio/proto each with its own copy of protobufjs, and a type of
// one copy is not a Type of the other. Parse with the copy the history types belong to.
const require = createRequire(import.meta.url);
const protoRequire = createRequire(require.resolve('@temporalio/proto'));
const { fromJson } = protoRequire('protobufjs/ext/protojson');
const { patchProtobufRoot } = protoRequire('@temporalio/proto/lib/patch-protobuf-root');
const historyType = patchProtobufRoot(require('@temporalio/proto')).lookupType('temporal.api.history.v1.History');
const loadHistory = (json) => fromJson(historyType, json, { ignoreUnknownFields: true });
const only = args[2];
const files = (await readdir(folder)).filter((f) => f.endsWith(only ? `.${only}.json` : '.json')).sort();
const histories = await Promise.all(
  files.map(async (file) => ({
    workflowId: file,
    history: loadHistory(JSON.parse(await readFile(path.join(folder, file), 'utf8'))),
  })),
);
let failed = 0;
for await (const result of Worker.runReplayHistories({ workflowsPath, interceptors: { workflowModules } }, histories)) {
  if (result.error) {
    failed++;
    console.log(`FAIL ${result.workflowId}: ${result.error.message.replace(/\s*\n\s*/g, ' ')}`);
  } else {
    console.log(`ok   ${result.workflowId}`);
  }
}
console.log(`${files.length - failed} replayed, ${failed} failed`);
process.exit(failed ? 1 : 0);
