import { eventFromFlat, eventToFlat, eventFromMessageBody, InvalidEventError } from '../../core/event.js';

const SHA = 'ab'.repeat(64);

describe('flat VMCATCHER_* message ⇄ ImageEvent round trip is exact', () => {
  const cases: Array<[string, Record<string, string>]> = [
    [
      'an original enqueue-from-image-list message (no event type)',
      {
        VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'FOOBAR',
        VMCATCHER_EVENT_DC_DESCRIPTION: 'Description',
        VMCATCHER_EVENT_DC_IDENTIFIER: 'FOOBAR_',
        VMCATCHER_EVENT_AD_MPURI: 'https://FOOBAR_/7f1c5d25-614e-4409-bfa6-625d3ae7b9d4:619/',
        VMCATCHER_EVENT_DC_TITLE: 'Image [Scientific Linux/6.0/KVM]',
        VMCATCHER_EVENT_HV_HYPERVISOR: 'KVM',
        VMCATCHER_EVENT_HV_FORMAT: 'OVA',
        VMCATCHER_EVENT_HV_SIZE: '121243136',
        VMCATCHER_EVENT_HV_URI: 'http://FOO/FOO.ova',
        VMCATCHER_EVENT_HV_VERSION: '3.3.0-1',
        VMCATCHER_EVENT_SL_ARCH: 'x86_64',
        VMCATCHER_EVENT_SL_OS: 'Linux',
        VMCATCHER_EVENT_SL_OSNAME: 'Scientific Linux',
        VMCATCHER_EVENT_SL_OSVERSION: '6.0',
      },
    ],
    [
      'a vmcatcher AvailablePostfix with sha512, VO and cache folders',
      {
        VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
        VMCATCHER_EVENT_UUID_SESSION: 's-1',
        VMCATCHER_CACHE_DIR_CACHE: '/var/lib/vmcatcher/cache',
        VMCATCHER_CACHE_DIR_DOWNLOAD: '/var/lib/vmcatcher/cache/partial',
        VMCATCHER_CACHE_DIR_EXPIRE: '/var/lib/vmcatcher/cache/expired',
        VMCATCHER_EVENT_FILENAME: 'c0482bc2',
        VMCATCHER_EVENT_DC_IDENTIFIER: 'c0482bc2',
        VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA,
        VMCATCHER_EVENT_SL_COMMENTS: 'a comment',
        VMCATCHER_EVENT_VO: 'some1.vo.net',
      },
    ],
    [
      'an ExpirePostfix with its timestamped file name',
      {
        VMCATCHER_EVENT_TYPE: 'ExpirePostfix',
        VMCATCHER_EVENT_DC_IDENTIFIER: 'c0482bc2',
        VMCATCHER_EVENT_FILENAME: 'c0482bc2.2015-06-18_21-14-00',
      },
    ],
    [
      'unknown keys are carried through',
      { VMCATCHER_EVENT_DC_IDENTIFIER: 'x', VMCATCHER_EVENT_FUTURE_KEY: 'kept', OTHER: '' },
    ],
    ['each of the other event types', { VMCATCHER_EVENT_TYPE: 'SubscriptionImageNew' }],
  ];

  test.each(cases)('%s', (_name, flat) => {
    const event = eventFromFlat(flat, 'message');
    expect(eventToFlat(event)).toEqual(flat);
    expect(eventToFlat(eventFromMessageBody(JSON.stringify(flat)))).toEqual(flat);
  });

  test('the typed fields are what the flat keys say', () => {
    const event = eventFromFlat(cases[1][1], 'vmcatcher');
    expect(event).toMatchObject({
      type: 'AvailablePostfix',
      checksumSha512: SHA,
      vo: 'some1.vo.net',
      cacheDir: '/var/lib/vmcatcher/cache',
      comments: 'a comment',
    });
  });
});

describe('flat → event normalisations', () => {
  const cases: Array<[string, Record<string, unknown>, Record<string, string>]> = [
    [
      'the README spelling ExpirePosfix means ExpirePostfix',
      { VMCATCHER_EVENT_TYPE: 'ExpirePosfix' },
      { VMCATCHER_EVENT_TYPE: 'ExpirePostfix' },
    ],
    [
      'an upper-case sha512 is lower-cased',
      { VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA.toUpperCase() },
      { VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA },
    ],
    [
      'a JSON number size becomes its decimal text',
      { VMCATCHER_EVENT_HV_SIZE: 2147483648 },
      { VMCATCHER_EVENT_HV_SIZE: '2147483648' },
    ],
    [
      'an empty known value counts as absent',
      { VMCATCHER_EVENT_DC_TITLE: '', VMCATCHER_EVENT_DC_IDENTIFIER: 'x' },
      { VMCATCHER_EVENT_DC_IDENTIFIER: 'x' },
    ],
    ['a null value is dropped', { VMCATCHER_EVENT_DC_TITLE: null }, {}],
  ];
  test.each(cases)('%s', (_name, input, expected) => {
    expect(eventToFlat(eventFromFlat(input, 'message'))).toEqual(expected);
  });
});

describe('invalid flat messages name the key', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['unknown event type', { VMCATCHER_EVENT_TYPE: 'Available' }, 'VMCATCHER_EVENT_TYPE'],
    ['non-numeric size', { VMCATCHER_EVENT_HV_SIZE: '12MB' }, 'VMCATCHER_EVENT_HV_SIZE'],
    ['short sha512', { VMCATCHER_EVENT_SL_CHECKSUM_SHA512: 'abc' }, 'VMCATCHER_EVENT_SL_CHECKSUM_SHA512'],
    ['nested object', { VMCATCHER_EVENT_DC_TITLE: { a: 1 } }, 'VMCATCHER_EVENT_DC_TITLE'],
  ];
  test.each(cases)('%s', (_name, input, key) => {
    let error: unknown;
    try {
      eventFromFlat(input, 'message');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidEventError);
    expect((error as InvalidEventError).key).toBe(key);
  });
});
