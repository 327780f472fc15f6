import path from 'node:path';
import { execa } from 'execa';
import * as workflows from '../../workflows/index.js';
import { ROOT } from '../support/cli.js';
import { HISTORIES, RECORD_COMMAND, recordedWorkflowTypes } from '../support/histories.js';

/**
 * Workflows already running on a site are replayed by the new code after an upgrade: every
 * command the new code issues must match the history the old code wrote. The histories in
 * test/fixtures/histories/ were recorded from the code as it ran (a registration on Synnefo and
 * on Glance, a host lost, a disk wait, an expiry racing a registration, a list sync that
 * registers and expires, one answered 304, a refused list, a registry sync), and every one must
 * replay against the workflows' sources here, with no server and nothing built: Temporal's
 * replayer bundles workflows/index.ts itself (scripts/replay-histories.mjs, which a developer
 * can run by hand the same way).
 *
 * When a change fails this test, running workflows would fail the same way: guard the change
 * with `patched()` (workflow code keeps the old commands for histories that lack the patch
 * marker) or give the new behaviour a new workflow type. Never re-record a history to make this
 * pass. A new workflow type, or a new path through one, gets its own recording: a test in
 * test/integration/workflows-mocked.test.ts that calls keepHistory(), recorded (only that test,
 * with `-t`) against the dev server by
 *   SNF_VMCATCHER_RECORD_HISTORIES=1 node --experimental-vm-modules --no-warnings=ExperimentalWarning node_modules/jest/bin/jest.js test/integration/workflows-mocked.test.ts -t '<its name>'
 */

/** Replays with the workflow interceptor the worker bundles (workflows/outcomes.ts), as the worker runs them. */
const replay = (workflowsModule: string, workflowType?: string) =>
  execa(
    process.execPath,
    [
      path.join(ROOT, 'scripts/replay-histories.mjs'),
      '--interceptor',
      path.join(ROOT, 'workflows/outcomes.ts'),
      HISTORIES,
      workflowsModule,
      ...(workflowType ? [workflowType] : []),
    ],
    { reject: false },
  );

/** Each history's outcome as the script printed it: `ok` or the failure's message. */
function outcomes(stdout: string): Map<string, string> {
  const seen = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const ok = /^ok {3}(\S+\.json)$/.exec(line);
    if (ok) seen.set(ok[1]!, 'ok');
    const failed = /^FAIL (\S+\.json): (.*)$/.exec(line);
    if (failed) seen.set(failed[1]!, failed[2]!);
  }
  return seen;
}

describe('replay of recorded workflow histories', () => {
  test('every recorded history replays against the workflows in the sources, without a server or a build', async () => {
    const recorded = await recordedWorkflowTypes();
    const result = await replay(path.join(ROOT, 'workflows/index.ts'));
    const seen = outcomes(result.stdout);
    expect(result.stderr).not.toMatch(/Webpack finished with errors/);
    expect([...seen.keys()]).toEqual(recorded.map((r) => r.file));
    expect([...seen].filter(([, outcome]) => outcome !== 'ok')).toEqual([]);
    expect(result.exitCode).toBe(0);
  }, 180_000);

  test('every workflow type the workflows module exports has a recorded history', async () => {
    // The worker registers every function workflows/index.ts exports as a workflow type.
    const exported = Object.entries(workflows)
      .filter(([, value]) => typeof value === 'function')
      .map(([name]) => name)
      .sort();
    const recorded = new Set((await recordedWorkflowTypes()).map((r) => r.type));
    expect(exported).toEqual(
      expect.arrayContaining(['expireImage', 'imageRevision', 'registerImage', 'syncImageList']),
    );
    const unrecorded = exported.filter((type) => !recorded.has(type));
    if (unrecorded.length > 0) {
      throw new Error(
        `no recorded history for the workflow type(s) ${unrecorded.join(', ')}: add a test that records one ` +
          `(keepHistory) to test/integration/workflows-mocked.test.ts and run it with ${RECORD_COMMAND} -t '<its name>'`,
      );
    }
  });

  test('a workflow changed without patched() fails the replay of its recorded histories with a non-determinism error', async () => {
    // expireImage with its step renamed (test/support/replay-changed-workflow.ts).
    const result = await replay(path.join(ROOT, 'test/support/replay-changed-workflow.ts'), 'expireImage');
    const seen = outcomes(result.stdout);
    const expiries = (await recordedWorkflowTypes()).filter((r) => r.type === 'expireImage').map((r) => r.file);
    expect(expiries.length).toBeGreaterThan(0);
    expect([...seen.keys()]).toEqual(expiries);
    for (const file of expiries) expect(seen.get(file)).toMatch(/nondeterminism/i);
    expect(result.exitCode).toBe(1);
  }, 180_000);
});
