import path from 'node:path';
import { execa } from 'execa';
import { ROOT } from '../support/cli.js';

/**
 * Histories recorded from real runs (test/integration/workflows-mocked.test.ts with
 * SNF_VMCATCHER_RECORD_HISTORIES=1) replay against today's compiled workflow code without a
 * non-determinism error: a change that would break workflows already running on a site fails
 * here, before it ships. Such a change needs a patch (workflow.patched) or a new workflow type.
 */
describe('replay of recorded workflow histories', () => {
  test('every recorded history replays against the workflows in dist/', async () => {
    const result = await execa(
      'node',
      [path.join(ROOT, 'scripts/replay-histories.mjs'), path.join(ROOT, 'test/fixtures/histories')],
      { reject: false },
    );
    const lines = result.stdout.split('\n');
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(lines.filter((l) => l.startsWith('ok')).length).toBeGreaterThanOrEqual(10);
    expect(result.exitCode).toBe(0);
  }, 180_000);
});
