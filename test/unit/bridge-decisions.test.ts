import { ServiceError } from '@temporalio/client';
import {
  classifyStartFailure,
  deadLetterCause,
  deadLetterPublishOptions,
  DETAIL_HEADER,
  KEY_HEADER,
  REASON_HEADER,
} from '../../bridge/consumer.js';
import { backoffMs } from '../../bridge/bridge.js';
import { eventFromMessageBody, InvalidEventError, assertActionable } from '../../core/event.js';

function parseError(body: string): InvalidEventError {
  try {
    assertActionable(eventFromMessageBody(body));
  } catch (err) {
    return err as InvalidEventError;
  }
  throw new Error(`expected ${body} to be invalid`);
}

describe('deadLetterCause names why a message is not a valid event', () => {
  test.each([
    ['{not json', 'invalid-json', undefined],
    ['[1,2]', 'not-an-object', undefined],
    ['"text"', 'not-an-object', undefined],
    ['{"VMCATCHER_EVENT_DC_IDENTIFIER": {"a": "b"}}', 'nested-value', 'VMCATCHER_EVENT_DC_IDENTIFIER'],
    ['{"VMCATCHER_EVENT_TYPE": "Nonsense", "VMCATCHER_EVENT_DC_IDENTIFIER": "x"}', 'bad-event-type', 'VMCATCHER_EVENT_TYPE'],
    ['{"VMCATCHER_EVENT_HV_URI": "http://h/x.img"}', 'missing-key', 'VMCATCHER_EVENT_DC_IDENTIFIER'],
    ['{"VMCATCHER_EVENT_DC_IDENTIFIER": "x"}', 'missing-key', 'VMCATCHER_EVENT_HV_URI'],
    ['{"VMCATCHER_EVENT_DC_IDENTIFIER": "x", "VMCATCHER_EVENT_HV_SIZE": "big"}', 'invalid-value', 'VMCATCHER_EVENT_HV_SIZE'],
    ['{"VMCATCHER_EVENT_DC_IDENTIFIER": "x", "VMCATCHER_EVENT_HV_URI": "https://tok:x-oauth-basic@h/x.img"}', 'credentials-in-url', 'VMCATCHER_EVENT_HV_URI'],
  ])('%s → %s (key %s)', (body, reason, key) => {
    const cause = deadLetterCause(parseError(body));
    expect(cause.reason).toBe(reason);
    expect(cause.key).toBe(key);
    expect(cause.detail.length).toBeGreaterThan(0);
  });
});

describe('classifyStartFailure keeps messages through outages and dead-letters only what can never start', () => {
  const grpc = (code: number, message = 'boom') => Object.assign(new Error(message), { code });
  test.each([
    ['UNAVAILABLE', new ServiceError('Failed to start Workflow', { cause: grpc(14, '14 UNAVAILABLE: No connection established') }), 'unavailable'],
    ['DEADLINE_EXCEEDED', grpc(4, 'Deadline exceeded'), 'unavailable'],
    ['RESOURCE_EXHAUSTED', grpc(8), 'unavailable'],
    ['namespace NOT_FOUND', new ServiceError('x', { cause: grpc(5, 'Namespace nope is not found') }), 'unavailable'],
    ['a plain network error', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'unavailable'],
    ['INVALID_ARGUMENT', new ServiceError('Failed to start Workflow', { cause: grpc(3, 'id too long') }), 'invalid'],
    ['InvalidEventError', new InvalidEventError('VMCATCHER_EVENT_HV_URI is required', 'missing-key', 'VMCATCHER_EVENT_HV_URI'), 'invalid'],
  ])('%s → %s', (_name, err, kind) => {
    expect(classifyStartFailure(err).kind).toBe(kind);
  });

  test('Temporal refusing a start is dead-lettered as rejected-by-temporal with the server message', () => {
    const failure = classifyStartFailure(new ServiceError('Failed to start Workflow', { cause: grpc(3, 'id too long') }));
    expect(failure).toEqual({ kind: 'invalid', cause: { reason: 'rejected-by-temporal', detail: expect.stringContaining('id too long') } });
  });
});

describe('deadLetterPublishOptions', () => {
  const now = new Date('2024-01-02T03:04:05Z');
  test('keeps the original properties and headers, adds the reason, key and detail, and is persistent', () => {
    const options = deadLetterPublishOptions(
      {
        contentType: 'application/json',
        contentEncoding: undefined,
        headers: { 'x-app': 'vmcatcher' },
        deliveryMode: 1,
        priority: 0,
        correlationId: undefined,
        replyTo: undefined,
        expiration: '60000',
        messageId: 'm-1',
        timestamp: 1700000000,
        type: undefined,
        userId: 'someone',
        appId: 'snf-vmcatcher',
        clusterId: undefined,
      },
      { reason: 'missing-key', key: 'VMCATCHER_EVENT_HV_URI', detail: 'VMCATCHER_EVENT_HV_URI is required' },
      { queue: 'vmcatcher', redelivered: false, now },
    );
    expect(options).toMatchObject({
      persistent: true,
      contentType: 'application/json',
      messageId: 'm-1',
      timestamp: 1700000000,
      priority: 0,
      appId: 'snf-vmcatcher',
      headers: {
        'x-app': 'vmcatcher',
        [REASON_HEADER]: 'missing-key',
        [KEY_HEADER]: 'VMCATCHER_EVENT_HV_URI',
        [DETAIL_HEADER]: 'VMCATCHER_EVENT_HV_URI is required',
        'x-snf-vmcatcher-original-queue': 'vmcatcher',
        'x-snf-vmcatcher-dead-lettered-at': '2024-01-02T03:04:05.000Z',
        'x-snf-vmcatcher-original-user-id': 'someone',
      },
    });
    // A dead letter must not expire, and RabbitMQ refuses a foreign user-id.
    expect(options).not.toHaveProperty('expiration');
    expect(options).not.toHaveProperty('userId');
  });
});

describe('backoffMs', () => {
  test.each([
    [0, 500],
    [1, 1000],
    [3, 4000],
    [10, 30000],
    [1000, 30000],
  ])('attempt %i → %i ms (capped at 30 s)', (attempt, ms) => {
    expect(backoffMs(attempt, 30000)).toBe(ms);
  });
});
