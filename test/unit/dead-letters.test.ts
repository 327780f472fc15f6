import type { GetMessage } from 'amqplib';
import { describeDeadLetter, replayPublishOptions } from '../../bridge/dead-letters.js';
import { selects } from '../../cli/commands/dead-letters.js';

type Properties = GetMessage['properties'];

const properties = (headers: Record<string, unknown>, extra: Partial<Properties> = {}): Properties =>
  ({
    contentType: 'application/json',
    contentEncoding: undefined,
    headers,
    deliveryMode: 2,
    priority: undefined,
    correlationId: undefined,
    replyTo: undefined,
    expiration: undefined,
    messageId: 'm-1',
    timestamp: 1700000000,
    type: undefined,
    userId: undefined,
    appId: 'snf-vmcatcher',
    clusterId: undefined,
    ...extra,
  }) as Properties;

const body = Buffer.from(
  JSON.stringify({
    VMCATCHER_EVENT_DC_IDENTIFIER: 'img',
    VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list',
    VMCATCHER_EVENT_DC_TITLE: 'T',
  }),
);

describe('describeDeadLetter', () => {
  test('reads the reason, key, detail, time and id the bridge recorded, and the image the body names', () => {
    const letter = describeDeadLetter(
      {
        content: body,
        properties: properties({
          'x-snf-vmcatcher-reason': 'missing-key',
          'x-snf-vmcatcher-key': 'VMCATCHER_EVENT_HV_URI',
          'x-snf-vmcatcher-error': Buffer.from('VMCATCHER_EVENT_HV_URI is required'),
          'x-snf-vmcatcher-original-queue': 'vmcatcher',
          'x-snf-vmcatcher-dead-lettered-at': '2026-01-02T03:04:05.000Z',
          'x-snf-vmcatcher-dead-letter-id': 'a1b2c3d4e5f6',
          'x-snf-vmcatcher-replays': 2,
        }),
      },
      4,
    );
    expect(letter).toMatchObject({
      position: 4,
      id: 'a1b2c3d4e5f6',
      reason: 'missing-key',
      key: 'VMCATCHER_EVENT_HV_URI',
      detail: 'VMCATCHER_EVENT_HV_URI is required',
      originalQueue: 'vmcatcher',
      deadLetteredAt: new Date('2026-01-02T03:04:05Z'),
      imageIdentifier: 'img',
      imageListIdentifier: 'list',
      title: 'T',
      messageId: 'm-1',
      replays: 2,
    });
  });

  test("falls back to RabbitMQ's x-death (most recent first) and to a content id that does not depend on the position", () => {
    const headers = {
      'x-death': [
        { count: 3, reason: 'expired', queue: 'vmcatcher.ttl', time: { '!': 'timestamp', value: 1767322800 } },
        { count: 1, reason: 'rejected', queue: 'older', time: { '!': 'timestamp', value: 1 } },
      ],
    };
    const first = describeDeadLetter({ content: Buffer.from('not json'), properties: properties(headers) }, 1);
    const later = describeDeadLetter({ content: Buffer.from('not json'), properties: properties(headers) }, 7);
    expect(first).toMatchObject({
      reason: 'rabbitmq-expired',
      detail: "RabbitMQ dead-lettered it from queue 'vmcatcher.ttl' (expired, 3 times)",
      originalQueue: 'vmcatcher.ttl',
      deadLetteredAt: new Date(1767322800 * 1000),
      replays: 0,
    });
    expect(first).not.toHaveProperty('imageIdentifier');
    expect(first.id).toMatch(/^[0-9a-f]{12}$/);
    expect(later.id).toBe(first.id);
    const other = describeDeadLetter({ content: Buffer.from('other'), properties: properties(headers) }, 1);
    expect(other.id).not.toBe(first.id);
  });

  test('a message with neither says so', () => {
    expect(describeDeadLetter({ content: body, properties: properties({}) }, 1)).toMatchObject({
      reason: 'unknown',
      deadLetteredAt: undefined,
    });
  });
});

describe('replayPublishOptions', () => {
  test('keeps the message and its properties, drops the headers of its stay in the dead-letter queue, counts the replay', () => {
    const props = properties(
      {
        'x-app': 'vmcatcher',
        'x-snf-vmcatcher-reason': 'rejected-by-temporal',
        'x-snf-vmcatcher-error': 'Temporal refused the start',
        'x-snf-vmcatcher-original-queue': 'vmcatcher',
        'x-snf-vmcatcher-dead-lettered-at': '2026-01-02T03:04:05.000Z',
        'x-snf-vmcatcher-dead-letter-id': 'a1b2c3d4e5f6',
        'x-snf-vmcatcher-replays': 1,
      },
      { expiration: '60000' },
    );
    const letter = describeDeadLetter({ content: body, properties: props }, 1);
    const options = replayPublishOptions(letter, props, new Date('2026-02-01T00:00:00Z'));
    expect(options).toEqual({
      persistent: true,
      mandatory: true,
      contentType: 'application/json',
      messageId: 'm-1',
      timestamp: 1700000000,
      appId: 'snf-vmcatcher',
      headers: {
        'x-app': 'vmcatcher',
        'x-snf-vmcatcher-replays': 2,
        'x-snf-vmcatcher-replayed-at': '2026-02-01T00:00:00.000Z',
      },
    });
  });
});

describe('selects', () => {
  const letter = { id: '00000000000a', position: 3 };
  test.each([
    ['3', true],
    ['4', false],
    ['00000000000a', true],
    ['00000000000b', false],
    // Twelve digits are an id, never a position.
    ['000000000003', false],
    ['x', false],
  ])('%s → %s', (selector, expected) => {
    expect(selects(selector, letter)).toBe(expected);
  });
});
