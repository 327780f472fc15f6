import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from './cli.js';

/** Where the recorded workflow histories live (one `<run>.<workflow type>.json` per workflow execution). */
export const HISTORIES = path.join(ROOT, 'test/fixtures/histories');

/** The command that records them again (a services test against the Temporal dev server). */
export const RECORD_COMMAND =
  'SNF_VMCATCHER_RECORD_HISTORIES=1 node --experimental-vm-modules --no-warnings=ExperimentalWarning node_modules/jest/bin/jest.js test/integration/workflows-mocked.test.ts';

const JSON_PLAIN = Buffer.from('json/plain').toString('base64');

/**
 * Fields that say who ran the workflow (pid@hostname) or where its code lived (stack traces), or
 * that differ on every recording (the server's task ids, request ids): none is read by a replay.
 */
const DROPPED = new Set(['identity', 'stackTrace', 'taskId', 'requestId']);
/** Sets the SDK writes in no fixed order. */
const SETS = new Set(['coreUsedFlags', 'langUsedFlags']);

/**
 * A history as `temporal workflow show --output json` writes it, made stable for a fixture: the
 * test's random task queue name becomes `stableName` everywhere (ids, task queues, and inside
 * json/plain payloads, so what the workflow computes from its input still matches), and the
 * recording machine's identity (worker identity, sticky queue), stack traces and the server's
 * per-recording ids are left out. Event times, run ids and everything the replay compares stay
 * as recorded: recording the same test twice differs in those only.
 */
export function stableHistory(shown: string, queue: string, stableName: string): string {
  const swap = (s: string) => s.split(queue).join(stableName);
  const walk = (value: unknown): unknown => {
    if (typeof value === 'string') return swap(value);
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>).filter(([key]) => !DROPPED.has(key));
      const object = Object.fromEntries(
        entries.map(([key, v]) => [key, SETS.has(key) && Array.isArray(v) ? [...(v as number[])].sort() : walk(v)]),
      );
      // A worker's sticky queue is named after its process and host (pid@hostname).
      if (object.kind === 'TASK_QUEUE_KIND_STICKY') object.name = `${stableName}-sticky`;
      const metadata = object.metadata as Record<string, string> | undefined;
      if (metadata?.encoding === JSON_PLAIN && typeof object.data === 'string') {
        object.data = Buffer.from(swap(Buffer.from(object.data, 'base64').toString('utf8'))).toString('base64');
      }
      return object;
    }
    return value;
  };
  return `${JSON.stringify(walk(JSON.parse(shown)), null, 1)}\n`;
}

/** Each recorded history file with the type of the workflow it records (from its first event, not its name). */
export async function recordedWorkflowTypes(folder = HISTORIES): Promise<Array<{ file: string; type: string }>> {
  const files = (await readdir(folder)).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(
    files.map(async (file) => {
      const history = JSON.parse(await readFile(path.join(folder, file), 'utf8')) as {
        events?: Array<{ workflowExecutionStartedEventAttributes?: { workflowType?: { name?: string } } }>;
      };
      const type = history.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name;
      if (!type) throw new Error(`${file} does not start with a WorkflowExecutionStarted event naming its type`);
      return { file, type };
    }),
  );
}
