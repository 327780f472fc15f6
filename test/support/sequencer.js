// Orders the test files so that the longest start first: with a few jest workers, a long file that
// starts last keeps one worker busy alone at the end. Jest's own order uses the durations of the
// last run on this machine (kept in its cache) and, with none, the file's size, which says little
// about a test that starts servers. So a file with no cached duration takes the one recorded in
// suite-durations.json (seconds, measured by a full `npm test` on the 2-core machine; update it
// when a file's duration changes much).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Sequencer from '@jest/test-sequencer';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RECORDED = JSON.parse(readFileSync(path.join(ROOT, 'test/support/suite-durations.json'), 'utf8'));

export default class LongestFirst extends (Sequencer.default ?? Sequencer) {
  sort(tests) {
    const seconds = (test) => {
      const cached = this.time(test);
      if (cached != null) return cached / 1000;
      return RECORDED[path.relative(ROOT, test.path)] ?? 0;
    };
    return [...tests].sort((a, b) => seconds(b) - seconds(a));
  }
}
