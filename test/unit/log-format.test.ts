import { PassThrough, Writable } from 'node:stream';
import { createLogger, logFormat, prettifyLines, registerSecrets } from '../../core/logging.js';

/** A destination that records what is written, and says whether it is a terminal. */
function sink(isTTY: boolean): Writable & { text(): string; isTTY: boolean } {
  let text = '';
  const stream = new Writable({
    write(chunk, _encoding, done) {
      text += String(chunk);
      done();
    },
  }) as Writable & { text(): string; isTTY: boolean };
  stream.text = () => text;
  stream.isTTY = isTTY;
  return stream;
}

describe('the log format', () => {
  test.each([
    [undefined, false, 'json'],
    [undefined, true, 'pretty'],
    ['json', true, 'json'],
    ['pretty', false, 'pretty'],
    [' PRETTY ', false, 'pretty'],
    ['something else', false, 'json'],
    ['something else', true, 'pretty'],
  ])('SNF_VMCATCHER_LOG_FORMAT=%p, a terminal: %p → %s', (format, isTTY, expected) => {
    expect(logFormat(sink(isTTY), { SNF_VMCATCHER_LOG_FORMAT: format })).toBe(expected);
  });

  test('a readable line: time, level, image, stage, message, the other keys inline; secrets scrubbed', () => {
    const secret = 'pretty-secret-value';
    registerSecrets([secret]);
    const out = sink(false);
    const saved = process.env.SNF_VMCATCHER_LOG_FORMAT;
    process.env.SNF_VMCATCHER_LOG_FORMAT = 'pretty';
    try {
      createLogger('test', { destination: out }).info(
        { imageId: 'img-1', activityType: 'acquireImage', bytes: 42, note: `token ${secret}` },
        'downloading',
      );
    } finally {
      if (saved === undefined) delete process.env.SNF_VMCATCHER_LOG_FORMAT;
      else process.env.SNF_VMCATCHER_LOG_FORMAT = saved;
    }
    const lines = out.text().trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: img-1 \[acquireImage\] downloading \{"bytes":42,"note":"token \*\*\*"\}$/,
    );
  });

  test('prettifyLines turns JSON lines into readable ones and passes other lines unchanged', async () => {
    const input = new PassThrough();
    const out = sink(false);
    const done = prettifyLines(input, out);
    input.end(
      [
        JSON.stringify({
          level: 40,
          time: '2026-12-07T01:02:03.004Z',
          pid: 1,
          name: 'run',
          part: 'bridge',
          msg: 'paused',
        }),
        'time=2026-12-07 level=WARN msg="a Temporal server line"',
        '{not json',
      ].join('\n') + '\n',
    );
    await done;
    const lines = out.text().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: \[bridge\] paused$/);
    expect(lines.slice(1)).toEqual(['time=2026-12-07 level=WARN msg="a Temporal server line"', '{not json']);
  });
});
