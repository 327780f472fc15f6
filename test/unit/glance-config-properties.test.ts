import path from 'node:path';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { loadConfig, parseConfig } from '../../core/config.js';
import { eventFromFlat } from '../../core/event.js';
import { imageDisplayName } from '../../clouds/identity.js';
import { IDENTITY_PROPERTIES, imageIdentity } from '../../core/workflow-contract.js';
import { authRequestBody, catalogEndpoint, keystoneV3Url } from '../../clouds/glance/keystone.js';
import {
  buildGlanceProperties,
  glanceArchitecture,
  glanceOsDistro,
  MAX_PROPERTY_LENGTH,
} from '../../clouds/glance/properties.js';
import { keystoneCredential } from '../../clouds/glance/session.js';

const glance = {
  type: 'glance',
  name: 'site-a',
  authUrl: 'https://keystone.example.org:5000/v3',
  applicationCredentialId: 'ac-1',
  credential: 'glance-secret',
};
const withCredential = (cloud: Record<string, unknown>) => ({
  cloud,
  security: { credentials: { 'glance-secret': 'the-secret-value' } },
});

describe('cloud configuration', () => {
  test('without a cloud block the target is Synnefo, as before', () => {
    expect(parseConfig({}, 'test').cloud).toEqual({ type: 'synnefo' });
  });

  test('a Glance cloud read from HOCON gets its defaults, and its secret is resolved by name', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-glance-conf-'));
    const file = path.join(dir, 'application.conf');
    await writeFile(
      file,
      `cloud { type = glance, name = site-a, authUrl = "https://keystone.example.org:5000/v3", applicationCredentialId = ac-1, credential = glance-secret
  visibility = shared, voProjects { "vo.example.org" = "p-123" }, diskFormats = [raw] }
security { credentials { glance-secret = { env = "GLANCE_SECRET_FOR_TEST" } } }`,
    );
    const { config } = await loadConfig({ file, env: {} });
    expect(config.cloud).toEqual({
      ...glance,
      userDomain: 'Default',
      projectDomain: 'Default',
      interface: 'public',
      visibility: 'shared',
      voProjects: { 'vo.example.org': 'p-123' },
      imageListVos: {},
      diskFormats: ['raw'],
      expireAction: 'deactivate',
      hashAlgorithm: 'sha512',
      properties: {},
    });
    process.env.GLANCE_SECRET_FOR_TEST = 'secret-from-env';
    try {
      expect(
        await keystoneCredential(config, config.cloud as Extract<typeof config.cloud, { type: 'glance' }>),
      ).toEqual({
        type: 'application-credential',
        id: 'ac-1',
        secret: 'secret-from-env',
      });
    } finally {
      delete process.env.GLANCE_SECRET_FOR_TEST;
    }
  });

  test.each([
    [{ ...glance, credential: 'missing' }, /cloud\.credential.*'missing' is not defined in security\.credentials/],
    [{ ...glance, username: 'u', project: 'p' }, /applicationCredentialId.*not both/],
    [
      { ...glance, applicationCredentialId: undefined, username: 'u' },
      /applicationCredentialId.*or username and project/,
    ],
    [{ ...glance, password: 'plain' }, /cloud/],
    [{ ...glance, visibility: 'everyone' }, /cloud\.visibility/],
    [{ ...glance, diskFormats: ['vmdk'] }, /cloud\.diskFormats/],
    [{ ...glance, expireAction: 'hide' }, /cloud\.expireAction/],
    [{ ...glance, name: 'has spaces' }, /cloud\.name/],
    [{ type: 'azure' }, /cloud\.type/],
  ])('a wrong Glance setting is refused naming the key: %j', (cloud, message) => {
    expect(() => parseConfig(withCredential(cloud), 'test')).toThrow(message);
  });

  test('a password login names its user, project and the credential holding the password', async () => {
    const config = parseConfig(
      withCredential({ ...glance, applicationCredentialId: undefined, username: 'sync', project: 'images' }),
      'test',
    );
    expect(await keystoneCredential(config, config.cloud as Extract<typeof config.cloud, { type: 'glance' }>)).toEqual({
      type: 'password',
      username: 'sync',
      userDomain: 'Default',
      password: 'the-secret-value',
      project: 'images',
      projectDomain: 'Default',
    });
  });
});

describe('Keystone requests and catalog', () => {
  test.each([
    ['https://k.example.org:5000', 'https://k.example.org:5000/v3'],
    ['https://k.example.org:5000/', 'https://k.example.org:5000/v3'],
    ['https://k.example.org/identity/v3/', 'https://k.example.org/identity/v3'],
  ])('%s → %s', (input, expected) => expect(keystoneV3Url(input)).toBe(expected));

  test('an application credential is sent without a scope; a password login is scoped to its project', () => {
    expect(authRequestBody({ type: 'application-credential', id: 'i', secret: 's' })).toEqual({
      auth: { identity: { methods: ['application_credential'], application_credential: { id: 'i', secret: 's' } } },
    });
    expect(
      authRequestBody({
        type: 'password',
        username: 'u',
        userDomain: 'D',
        password: 'p',
        project: 'pr',
        projectDomain: 'PD',
      }),
    ).toMatchObject({
      auth: { scope: { project: { name: 'pr', domain: { name: 'PD' } } } },
    });
  });

  const catalog = [
    {
      type: 'image',
      endpoints: [
        { interface: 'public', url: 'https://glance.a.example.org/', region_id: 'A' },
        { interface: 'internal', url: 'http://10.0.0.1:9292', region_id: 'A' },
        { interface: 'public', url: 'https://glance.b.example.org', region_id: 'B' },
      ],
    },
  ];
  test('the endpoint is chosen by interface and region', () => {
    expect(catalogEndpoint(catalog, 'image', 'public', 'A')).toBe('https://glance.a.example.org');
    expect(catalogEndpoint(catalog, 'image', 'internal', 'A')).toBe('http://10.0.0.1:9292');
    expect(() => catalogEndpoint(catalog, 'image', 'public')).toThrow(
      /several 'image' endpoints for interface public: name the region/,
    );
    expect(() => catalogEndpoint(catalog, 'image', 'admin', 'A')).toThrow(
      /no 'image' endpoint for interface admin, region A/,
    );
    expect(() => catalogEndpoint(catalog, 'volumev3', 'public', 'A')).toThrow(/no 'volumev3' service/);
  });
});

describe('Glance properties', () => {
  const event = (extra: Record<string, string> = {}) =>
    eventFromFlat(
      {
        VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list-1',
        VMCATCHER_EVENT_DC_IDENTIFIER: 'img-1',
        VMCATCHER_EVENT_DC_TITLE: 'CentOS 7',
        VMCATCHER_EVENT_HV_VERSION: '7.9',
        VMCATCHER_EVENT_SL_OSNAME: 'CentOS Linux',
        VMCATCHER_EVENT_SL_OSVERSION: '7',
        VMCATCHER_EVENT_SL_ARCH: 'amd64',
        VMCATCHER_EVENT_SL_OS: 'Linux',
        VMCATCHER_EVENT_AD_MPURI: 'https://appdb.example.org/store/vm/image/x:1/',
        ...extra,
      },
      'message',
    );

  test.each([
    ['Ubuntu', 'ubuntu'],
    ['CentOS Linux', 'centos'],
    ['Red Hat Enterprise Linux', 'rhel'],
    ['AlmaLinux', 'almalinux'],
    ['Scientific Linux', 'scientificlinux'],
    ['Windows Server 2019', 'windows'],
    ['Some OS 1', 'someos1'],
  ])('os_distro of %s is %s', (name, distro) => expect(glanceOsDistro(name)).toBe(distro));

  test.each([
    ['amd64', 'x86_64'],
    ['x86_64', 'x86_64'],
    ['i386', 'i686'],
    ['arm64', 'aarch64'],
    ['ppc64el', 'ppc64le'],
    ['riscv64', 'riscv64'],
  ])('architecture of %s is %s', (arch, glanceArch) => expect(glanceArchitecture(arch)).toBe(glanceArch));

  test('the EGI keys, the provenance keys cloud-info-provider reads, cloudkeeper-os keys and our identity', () => {
    const ev = event();
    const { properties } = buildGlanceProperties({ event: ev });
    expect(properties).toMatchObject({
      os_distro: 'centos',
      os_version: '7',
      architecture: 'x86_64',
      os_type: 'linux',
      vmcatcher_event_dc_title: 'CentOS 7',
      vmcatcher_event_ad_mpuri: 'https://appdb.example.org/store/vm/image/x:1/',
      vmcatcher_event_hv_version: '7.9',
      APPLIANCE_ID: 'img-1',
      APPLIANCE_IMAGE_LIST_ID: 'list-1',
      APPLIANCE_OPERATING_SYSTEM: 'CentOS Linux',
      [IDENTITY_PROPERTIES.imageId]: 'img-1',
      [IDENTITY_PROPERTIES.revision]: imageIdentity(ev).revision,
    });
    expect(JSON.parse(properties.APPLIANCE_ATTRIBUTES)).toEqual({
      'ad:mpuri': 'https://appdb.example.org/store/vm/image/x:1/',
      'dc:identifier': 'img-1',
      'hv:version': '7.9',
      'sl:os': 'Linux',
      'sl:osname': 'CentOS Linux',
      'sl:osversion': '7',
      'sl:arch': 'amd64',
      'dc:title': 'CentOS 7',
    });
  });

  test("values are cut to Glance's 255 characters, APPLIANCE_ATTRIBUTES stays valid JSON, and site properties never replace ours", () => {
    const long = 'x'.repeat(400);
    const { properties, truncated } = buildGlanceProperties({
      event: event({ VMCATCHER_EVENT_DC_DESCRIPTION: long, VMCATCHER_EVENT_DC_TITLE: long }),
      siteProperties: { hw_disk_bus: 'virtio', [IDENTITY_PROPERTIES.imageId]: 'forged', os_distro: 'forged' },
    });
    expect(properties.vmcatcher_event_dc_description).toHaveLength(MAX_PROPERTY_LENGTH);
    expect(truncated).toEqual(
      expect.arrayContaining(['vmcatcher_event_dc_description', 'vmcatcher_event_dc_title', 'APPLIANCE_DESCRIPTION']),
    );
    expect(properties.APPLIANCE_ATTRIBUTES.length).toBeLessThanOrEqual(MAX_PROPERTY_LENGTH);
    expect(JSON.parse(properties.APPLIANCE_ATTRIBUTES)['dc:title']).toBeUndefined();
    expect(properties.hw_disk_bus).toBe('virtio');
    expect(properties[IDENTITY_PROPERTIES.imageId]).toBe('img-1');
    expect(properties.os_distro).toBe('centos');
    expect(Object.values(properties).every((v) => v.length <= MAX_PROPERTY_LENGTH)).toBe(true);
  });

  test("os_type is only linux or windows; the operator's osfamily wins", () => {
    expect(
      buildGlanceProperties({
        event: event({ VMCATCHER_EVENT_SL_OS: 'FreeBSD', VMCATCHER_EVENT_SL_OSNAME: 'FreeBSD' }),
      }).properties.os_type,
    ).toBeUndefined();
    expect(buildGlanceProperties({ event: event(), osfamily: 'Windows' }).properties.os_type).toBe('windows');
  });
});

describe('Glance properties are ours alone', () => {
  test('no control character reaches a value or the name; site extras never stand in for our keys', () => {
    const event = eventFromFlat(
      {
        VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list-1',
        VMCATCHER_EVENT_DC_IDENTIFIER: 'img-1',
        VMCATCHER_EVENT_DC_TITLE: 'Alma\nLinux\u0085 9',
        VMCATCHER_EVENT_DC_DESCRIPTION: 'one\r\ntwo\u2028three',
      },
      'message',
    );
    const { properties } = buildGlanceProperties({
      event,
      siteProperties: {
        hw_disk_bus: 'virtio',
        vmcatcher_event_sl_checksum_sha512: 'ab'.repeat(64),
        VMCATCHER_VERIFIED_HASH: `sha512:${'0'.repeat(128)}`,
        APPLIANCE_VO: 'other.vo',
      },
    });
    expect(properties.vmcatcher_event_dc_title).toBe('Alma Linux 9');
    expect(properties.vmcatcher_event_dc_description).toBe('one two three');
    expect(properties.hw_disk_bus).toBe('virtio');
    expect(properties).not.toHaveProperty('vmcatcher_event_sl_checksum_sha512');
    expect(properties).not.toHaveProperty('VMCATCHER_VERIFIED_HASH');
    expect(properties).not.toHaveProperty('APPLIANCE_VO');
    expect(imageDisplayName(event)).toBe('Alma Linux 9');
  });
});
