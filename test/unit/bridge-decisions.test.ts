import { ServiceError, type Client } from '@temporalio/client';
import {
  classifyStartFailure,
  deadLetterCause,
  decideMessage,
  deadLetterPublishOptions,
  DETAIL_HEADER,
  KEY_HEADER,
  REASON_HEADER,
} from '../../bridge/messages.js';
import { backoffMs } from '../../bridge/backoff.js';
import { registrationSite } from '../../clouds/index.js';
import { eventFromMessageBody, InvalidEventError, assertActionable } from '../../core/event.js';
import { parseConfig } from '../../core/config.js';
import { SEARCH_ATTRIBUTES } from '../../core/workflow-contract.js';

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
    [
      '{"VMCATCHER_EVENT_TYPE": "Nonsense", "VMCATCHER_EVENT_DC_IDENTIFIER": "x"}',
      'bad-event-type',
      'VMCATCHER_EVENT_TYPE',
    ],
    ['{"VMCATCHER_EVENT_HV_URI": "http://h/x.img"}', 'missing-key', 'VMCATCHER_EVENT_DC_IDENTIFIER'],
    ['{"VMCATCHER_EVENT_DC_IDENTIFIER": "x"}', 'missing-key', 'VMCATCHER_EVENT_HV_URI'],
    [
      '{"VMCATCHER_EVENT_DC_IDENTIFIER": "x", "VMCATCHER_EVENT_HV_SIZE": "big"}',
      'invalid-value',
      'VMCATCHER_EVENT_HV_SIZE',
    ],
    [
      '{"VMCATCHER_EVENT_DC_IDENTIFIER": "x", "VMCATCHER_EVENT_HV_URI": "https://tok:x-oauth-basic@h/x.img"}',
      'credentials-in-url',
      'VMCATCHER_EVENT_HV_URI',
    ],
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
    [
      'UNAVAILABLE',
      new ServiceError('Failed to start Workflow', { cause: grpc(14, '14 UNAVAILABLE: No connection established') }),
      'unavailable',
    ],
    ['DEADLINE_EXCEEDED', grpc(4, 'Deadline exceeded'), 'unavailable'],
    ['RESOURCE_EXHAUSTED', grpc(8), 'unavailable'],
    ['namespace NOT_FOUND', new ServiceError('x', { cause: grpc(5, 'Namespace nope is not found') }), 'unavailable'],
    [
      'a plain network error',
      Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
      'unavailable',
    ],
    ['INVALID_ARGUMENT', new ServiceError('Failed to start Workflow', { cause: grpc(3, 'id too long') }), 'invalid'],
    [
      'InvalidEventError',
      new InvalidEventError('VMCATCHER_EVENT_HV_URI is required', 'missing-key', 'VMCATCHER_EVENT_HV_URI'),
      'invalid',
    ],
  ])('%s → %s', (_name, err, kind) => {
    expect(classifyStartFailure(err).kind).toBe(kind);
  });

  test('Temporal refusing a start is dead-lettered as rejected-by-temporal with the server message', () => {
    const failure = classifyStartFailure(
      new ServiceError('Failed to start Workflow', { cause: grpc(3, 'id too long') }),
    );
    expect(failure).toEqual({
      kind: 'invalid',
      cause: { reason: 'rejected-by-temporal', detail: expect.stringContaining('id too long') },
    });
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

describe('decideMessage tells a namespace without our search attributes from a message Temporal refuses', () => {
  const grpc = (code: number, message: string) => Object.assign(new Error(message), { code });
  const config = parseConfig({}, 'test');
  const body = Buffer.from(
    JSON.stringify({
      VMCATCHER_EVENT_DC_IDENTIFIER: 'img',
      VMCATCHER_EVENT_HV_URI: 'http://h/img.raw',
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list',
    }),
  );
  const all = Object.fromEntries(SEARCH_ATTRIBUTES.map(({ name }) => [name, 2])); // 2 = Keyword

  function clientRefusing(
    serverSays: string,
    listing: () => Promise<{ customAttributes: Record<string, number> }>,
  ): Client {
    return {
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: {
        signalWithStart: async () => {
          throw new ServiceError('Failed to start Workflow', { cause: grpc(3, `3 INVALID_ARGUMENT: ${serverSays}`) });
        },
      },
      connection: { operatorService: { listSearchAttributes: listing } },
    } as unknown as Client;
  }
  const decide = (client: Client) =>
    decideMessage({ client, config, options: {}, site: registrationSite(config), startTimeoutMs: 1000 }, body);

  test('attributes missing from the namespace: misconfigured, naming each and the command that registers them', async () => {
    const decision = await decide(
      clientRefusing('search attribute ImageStage is not defined', async () => ({ customAttributes: { ImageVO: 2 } })),
    );
    expect(decision.kind).toBe('misconfigured');
    if (decision.kind !== 'misconfigured') return;
    expect(decision.missing).toEqual([
      'ImageIdentifier (Keyword)',
      'ImageListIdentifier (Keyword)',
      'ImageStage (Keyword)',
      'ImageTitle (Keyword)',
      'ImageCloud (Keyword)',
    ]);
    expect(decision.detail).toContain(
      `temporal operator search-attribute create --namespace ${config.temporal.namespace} --name ImageIdentifier --type Keyword`,
    );
  });

  test('an attribute registered with another type counts as missing', async () => {
    const decision = await decide(
      clientRefusing('invalid value for search attribute ImageStage of type Int: queued', async () => ({
        customAttributes: { ...all, ImageStage: 3 },
      })),
    );
    expect(decision).toMatchObject({ kind: 'misconfigured', missing: ['ImageStage (Keyword)'] });
  });

  test('every attribute registered and a value refused: the message is dead-lettered', async () => {
    const decision = await decide(
      clientRefusing('search attribute ImageIdentifier value of size 5000: exceeds size limit 2048', async () => ({
        customAttributes: all,
      })),
    );
    expect(decision).toMatchObject({ kind: 'invalid', cause: { reason: 'rejected-by-temporal' } });
  });

  test('listed, but the server still says "not defined" (its cache is behind): kept, not dead-lettered', async () => {
    const decision = await decide(
      clientRefusing('search attribute ImageVO is not defined', async () => ({ customAttributes: all })),
    );
    expect(decision).toMatchObject({ kind: 'misconfigured', missing: ['ImageVO (Keyword)'] });
  });

  test('the attributes cannot be listed: kept as for an outage', async () => {
    const decision = await decide(
      clientRefusing('search attribute ImageStage is not defined', async () => {
        throw grpc(7, 'PERMISSION_DENIED');
      }),
    );
    expect(decision.kind).toBe('unavailable');
  });
});
