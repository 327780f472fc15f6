import { eventFromFlat, type ImageEvent } from '../../core/event.js';
import { IDENTITY_PROPERTIES, imageIdentity } from '../../core/workflow-contract.js';
import { identityFilter, imageDisplayName, imageObjectName, normaliseOsFamily } from '../../clouds/identity.js';
import {
  buildImageProperties,
  MAX_IMAGE_PROPERTIES,
  ORIGINAL_EXCLUDED_TASKS,
  PROPERTY_KEY_PATTERN,
} from '../../clouds/synnefo/image-properties.js';

const SHA = 'ab'.repeat(64);

function event(extra: Record<string, string> = {}): ImageEvent {
  return eventFromFlat(
    {
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: '4871594e-32e5-5633-ae09-9098d7b96dcf',
      VMCATCHER_EVENT_DC_IDENTIFIER: 'c0ffee-image',
      VMCATCHER_EVENT_DC_TITLE: 'Image for Generic VM [Scientific Linux/6.4/KVM]',
      VMCATCHER_EVENT_HV_VERSION: '1.1',
      VMCATCHER_EVENT_HV_URI: 'https://appliance-repo.egi.eu/images/generic-VM.ova',
      VMCATCHER_EVENT_AD_MPURI: 'https://appdb.egi.eu/store/vo/image/abc/',
      VMCATCHER_EVENT_SL_OS: 'Linux',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA,
      ...extra,
    },
    'image-list',
  );
}

describe('normaliseOsFamily', () => {
  test.each([
    ['Linux', 'linux'],
    [' LINUX ', 'linux'],
    ['Scientific Linux', 'linux'],
    ['Windows', 'windows'],
    ['Microsoft Windows Server', 'windows'],
    ['FreeBSD', 'freebsd'],
    ['', undefined],
    [undefined, undefined],
  ])('%p → %p', (input, expected) => {
    expect(normaliseOsFamily(input)).toBe(expected);
  });
});

describe('buildImageProperties', () => {
  test('carries the identity, the deploy properties, the original EXCLUDE_TASK set and provenance', () => {
    const ev = event();
    const { properties } = buildImageProperties({
      event: ev,
      options: {},
      metadata: { ROOT_PARTITION: '2', USERS: 'user', OS: 'centos' },
    });
    const id = imageIdentity(ev);
    expect(properties[IDENTITY_PROPERTIES.imageListId]).toBe(id.imageListId);
    expect(properties[IDENTITY_PROPERTIES.imageId]).toBe('c0ffee-image');
    expect(properties[IDENTITY_PROPERTIES.revision]).toBe(`sha512-${SHA.slice(0, 32)}`);
    expect(properties.OSFAMILY).toBe('linux');
    expect(properties.ROOT_PARTITION).toBe('2');
    expect(properties.USERS).toBe('user');
    expect(properties.OS).toBe('centos');
    for (const key of ORIGINAL_EXCLUDED_TASKS) expect(properties[key]).toBe('yes');
    expect(properties.VMCATCHER_EVENT_AD_MPURI).toBe('https://appdb.egi.eu/store/vo/image/abc/');
    expect(properties.VMCATCHER_EVENT_DC_TITLE).toBe('Image for Generic VM [Scientific Linux/6.4/KVM]');
    expect(properties.VMCATCHER_EVENT_HV_VERSION).toBe('1.1');
    expect(properties.VMCATCHER_EVENT_SL_CHECKSUM_SHA512).toBe(SHA);
  });

  test.each<
    [
      string,
      {
        options?: Record<string, string>;
        metadata?: Record<string, string>;
        os?: string;
        defaults?: Record<string, string>;
      },
      Record<string, string | undefined>,
    ]
  >([
    ['OSFAMILY from sl:os, lower-cased', {}, { OSFAMILY: 'linux' }],
    ['OSFAMILY from snf-mkimage beats sl:os', { metadata: { OSFAMILY: 'windows' } }, { OSFAMILY: 'windows' }],
    [
      'the -osfamily option beats everything',
      { options: { osfamily: 'Windows' }, metadata: { OSFAMILY: 'linux' } },
      { OSFAMILY: 'windows' },
    ],
    ['the site default when nothing tells', { os: '', defaults: { osfamily: 'Linux' } }, { OSFAMILY: 'linux' }],
    ['no ROOT_PARTITION when snf-mkimage did not detect one (never a hard-coded 1)', {}, { ROOT_PARTITION: undefined }],
    ['ROOT_PARTITION is what snf-mkimage detected', { metadata: { ROOT_PARTITION: '3' } }, { ROOT_PARTITION: '3' }],
    [
      'USERS from the option over detection',
      { options: { users: 'centos' }, metadata: { USERS: 'root' } },
      { USERS: 'centos' },
    ],
    [
      'USERS from detection over the site default',
      { metadata: { USERS: 'ubuntu' }, defaults: { users: 'root' } },
      { USERS: 'ubuntu' },
    ],
    [
      'snf-mkimage cannot overwrite an identity property',
      { metadata: { VMCATCHER_DC_IDENTIFIER: 'evil' } },
      { VMCATCHER_DC_IDENTIFIER: 'c0ffee-image' },
    ],
    [
      'a detected EXCLUDE_TASK value is kept',
      { metadata: { EXCLUDE_TASK_ADDSWAP: 'no' } },
      { EXCLUDE_TASK_ADDSWAP: 'no' },
    ],
    [
      'control characters in values become spaces',
      { metadata: { DESCRIPTION: 'line1\nline2' } },
      { DESCRIPTION: 'line1 line2' },
    ],
  ])('%s', (_name, input, expected) => {
    const ev = input.os === '' ? event({ VMCATCHER_EVENT_SL_OS: '' }) : event();
    const { properties } = buildImageProperties({
      event: ev,
      options: input.options ?? {},
      metadata: input.metadata ?? {},
      defaults: input.defaults,
    });
    for (const [key, value] of Object.entries(expected)) expect(properties[key]).toBe(value);
  });

  test('metadata keys Synnefo would refuse are rejected, not sent', () => {
    const { properties, rejected } = buildImageProperties({
      event: event(),
      options: {},
      metadata: { 'BAD-KEY': 'x', 'with space': 'y', lower_ok: 'z' },
    });
    expect(rejected).toEqual(['BAD-KEY', 'with space']);
    expect(properties.LOWER_OK).toBe('z');
    for (const key of Object.keys(properties)) expect(key).toMatch(PROPERTY_KEY_PATTERN);
  });

  test('never more than 32: the least important go first and the identity stays', () => {
    const metadata: Record<string, string> = {
      OS: 'debian',
      DESCRIPTION: 'Debian',
      PARTITION_TABLE: 'msdos',
      ROOT_PARTITION: '1',
    };
    for (let i = 0; i < 40; i++) metadata[`CUSTOM_${String.fromCharCode(65 + (i % 26))}${i}`] = String(i);
    const full = event({
      VMCATCHER_EVENT_VO: 'fedcloud.egi.eu',
      VMCATCHER_EVENT_SL_OSNAME: 'Debian',
      VMCATCHER_EVENT_SL_OSVERSION: '12',
      VMCATCHER_EVENT_SL_ARCH: 'x86_64',
      VMCATCHER_EVENT_HV_HYPERVISOR: 'KVM',
      VMCATCHER_EVENT_HV_FORMAT: 'qcow2',
      VMCATCHER_EVENT_HV_SIZE: '1024',
      VMCATCHER_EVENT_DC_DESCRIPTION: 'A long description',
    });
    const { properties, dropped } = buildImageProperties({
      event: full,
      options: {},
      metadata,
      defaults: { users: 'root' },
    });
    expect(Object.keys(properties)).toHaveLength(MAX_IMAGE_PROPERTIES);
    for (const key of Object.values(IDENTITY_PROPERTIES)) expect(properties[key]).toBeDefined();
    for (const key of ['OSFAMILY', 'ROOT_PARTITION', 'USERS', 'PARTITION_TABLE', ...ORIGINAL_EXCLUDED_TASKS])
      expect(properties[key]).toBeDefined();
    expect(properties.VMCATCHER_EVENT_AD_MPURI).toBeDefined();
    expect(properties.OS).toBeDefined();
    // 30 properties rank above the custom metadata, which ranks last: the first 2 stay, 38 go.
    expect(Object.keys(properties).filter((k) => k.startsWith('CUSTOM_'))).toEqual(['CUSTOM_A0', 'CUSTOM_B1']);
    expect(dropped).toHaveLength(38);
    expect(dropped.every((k) => k.startsWith('CUSTOM_'))).toBe(true);
  });
});

describe('identity helpers', () => {
  test('the object name is stable for one revision and differs between revisions', () => {
    expect(imageObjectName(event())).toBe(imageObjectName(event()));
    expect(imageObjectName(event())).not.toBe(
      imageObjectName(event({ VMCATCHER_EVENT_SL_CHECKSUM_SHA512: 'cd'.repeat(64) })),
    );
    expect(imageObjectName(event())).toMatch(/^vmcatcher-[A-Za-z0-9._-]+$/);
  });

  test('the expire filter ignores the revision, the register filter does not', () => {
    expect(Object.keys(identityFilter(event()))).toContain(IDENTITY_PROPERTIES.revision);
    expect(Object.keys(identityFilter(event(), true))).not.toContain(IDENTITY_PROPERTIES.revision);
  });
});

describe('our properties are ours alone', () => {
  test('a source naming ROOT_PARTITION, USERS, EXCLUDE_*, a checksum or an identity key sets none of them, even where we set none', () => {
    // Not prepared (no snf-mkimage metadata) and no sha512: the keys are free, and still not theirs.
    const ev = eventFromFlat(
      { VMCATCHER_EVENT_DC_IDENTIFIER: 'ubuntu', VMCATCHER_EVENT_SL_CHECKSUM_SHA256: 'e'.repeat(64) },
      'registry',
    );
    ev.properties = {
      ROOT_PARTITION: '9',
      users: 'attacker',
      EXCLUDE_ALL_TASKS: 'yes',
      exclude_task_changepassword: 'no',
      SWAP: '2:512',
      password_hashing_method: 'md5',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: 'ab'.repeat(64),
      'vmcatcher.il.dc.identifier': 'another-list',
      os_distro: 'ubuntu',
    };
    const built = buildImageProperties({ event: ev, options: {}, metadata: {} });
    expect(built.properties).not.toHaveProperty('ROOT_PARTITION');
    expect(built.properties).not.toHaveProperty('EXCLUDE_ALL_TASKS');
    expect(built.properties).not.toHaveProperty('SWAP');
    expect(built.properties).not.toHaveProperty('PASSWORD_HASHING_METHOD');
    expect(built.properties).not.toHaveProperty('VMCATCHER_EVENT_SL_CHECKSUM_SHA512');
    expect(built.properties.USERS).toBeUndefined();
    expect(built.properties.EXCLUDE_TASK_CHANGEPASSWORD).toBe('yes');
    expect(built.properties.VMCATCHER_IL_DC_IDENTIFIER).toBe('no-list');
    expect(built.properties.OS_DISTRO).toBe('ubuntu');
    expect(built.ignored.sort()).toEqual(
      [
        'ROOT_PARTITION',
        'users',
        'EXCLUDE_ALL_TASKS',
        'exclude_task_changepassword',
        'SWAP',
        'password_hashing_method',
        'VMCATCHER_EVENT_SL_CHECKSUM_SHA512',
        'vmcatcher.il.dc.identifier',
      ].sort(),
    );
  });

  test('snf-mkimage metadata cannot set a VMCATCHER_* property either', () => {
    const ev = event();
    const built = buildImageProperties({
      event: ev,
      options: {},
      metadata: { VMCATCHER_EVENT_SL_CHECKSUM_SHA256: 'f'.repeat(64), VMCATCHER_EVENT_VO: 'other.vo', OS: 'ubuntu' },
    });
    expect(built.properties).not.toHaveProperty('VMCATCHER_EVENT_SL_CHECKSUM_SHA256');
    expect(built.properties).not.toHaveProperty('VMCATCHER_EVENT_VO');
    expect(built.properties.OS).toBe('ubuntu');
  });

  test('no control character reaches a property value or the name', () => {
    const ev = event({
      VMCATCHER_EVENT_DC_TITLE: 'Debian\n--public\r\u0085\u202812',
      VMCATCHER_EVENT_DC_DESCRIPTION: 'line one\u0000line two\u001b[31m',
    });
    const { properties } = buildImageProperties({ event: ev, options: {}, metadata: { OS: 'deb\nian' } });
    for (const value of Object.values(properties))
      // eslint-disable-next-line no-control-regex -- exactly what must not be there
      expect(value).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
    expect(properties.VMCATCHER_EVENT_DC_TITLE).toBe('Debian --public 12');
    expect(imageDisplayName(ev)).toBe('Debian --public 12 1.1');
    expect(imageDisplayName(event({ VMCATCHER_EVENT_DC_TITLE: '\n\t' }))).toBe('c0ffee-image 1.1');
  });
});
