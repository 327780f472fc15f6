import { describe, expect, it } from '@jest/globals';
import { parseConfig } from '../../core/config.js';
import { eventFromFlat, eventToFlat } from '../../core/event.js';
import { buildImageProperties } from '../../clouds/synnefo/image-properties.js';
import { imageIdentity } from '../../core/workflow-contract.js';
import { ANNOTATION_PROPERTIES, annotationProperties, registryImageToEvent } from '../../oci/annotations.js';
import { registryListId } from '../../core/config.js';
import { rollback } from '../../oci/source.js';
import { parseChallenges } from '../../oci/auth.js';
import { nextLink, RegistryClient } from '../../oci/client.js';
import { readDiskManifest, sha256Digest, type DiskManifest } from '../../oci/manifest.js';

const layer = { mediaType: 'application/x-qemu-disk', digest: `sha256:${'a'.repeat(64)}`, size: 10 };
const config = { mediaType: 'application/vnd.oci.empty.v1+json', digest: `sha256:${'4'.repeat(64)}`, size: 2 };

function manifest(doc: Record<string, unknown>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config,
      layers: [layer],
      ...doc,
    }),
  );
}

describe('WWW-Authenticate challenges', () => {
  it('reads a Bearer challenge with realm, service and scope (Harbor and the distribution server)', () => {
    expect(
      parseChallenges(
        'Bearer realm="https://registry.egi.eu/service/token",service="harbor-registry",scope="repository:egi_vm_images/ubuntu:pull"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://registry.egi.eu/service/token',
          service: 'harbor-registry',
          scope: 'repository:egi_vm_images/ubuntu:pull',
        },
      },
    ]);
  });

  it('reads several challenges, bare and quoted values with escapes', () => {
    expect(parseChallenges(['Basic realm="Registry Realm"', 'Bearer realm=https://a/t, scope="x \\"y\\""'])).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'https://a/t', scope: 'x "y"' } },
    ]);
  });
});

describe('Link pagination', () => {
  it('resolves rel="next" against the page that carried it; the client refuses any origin but the registry', () => {
    const base = new URL('https://registry.egi.eu/v2/_catalog?n=100');
    expect(nextLink('</v2/_catalog?last=b&n=100>; rel="next"', base)?.href).toBe(
      'https://registry.egi.eu/v2/_catalog?last=b&n=100',
    );
    expect(
      nextLink(
        '<https://other.example/api/v2.0/projects/p/repositories?page=2&page_size=100>; rel="next", </x?page=1>; rel="prev"',
        base,
      )?.href,
    ).toBe('https://other.example/api/v2.0/projects/p/repositories?page=2&page_size=100');
    // An absolute link to another host is refused by the client before any request.
    const elsewhere = nextLink('<http://evil.example/x>; rel="next"', base)!;
    const client = new RegistryClient({
      registry: new URL('https://registry.egi.eu'),
      security: parseConfig({}, 't').security,
    });
    expect(() => client.resolve(elsewhere)).toThrow(
      'registry registry.egi.eu: http://evil.example/x is not on the registry (https://registry.egi.eu); not requested',
    );
    // `/http:/evil/x` once became "http:/evil/x" resolved against the registry: another origin when
    // the registry is https. A link and a path are both resolved on the registry now.
    expect(nextLink('</http:/evil.example/x>; rel="next"', base)!.href).toBe(
      'https://registry.egi.eu/http:/evil.example/x',
    );
    // A path is always a path of the registry, whatever it looks like.
    expect(client.resolve('/http:/evil.example/x').href).toBe('https://registry.egi.eu/http:/evil.example/x');
    expect(nextLink('</x?page=1>; rel="prev"', base)).toBeUndefined();
    expect(nextLink(undefined, base)).toBeUndefined();
    void client.close();
  });
});

describe('manifests', () => {
  it('reads an OCI image manifest as oras writes it: the qemu disk layer and the annotations', () => {
    const bytes = manifest({
      artifactType: 'application/vnd.egi.cloud.vm-image.v1',
      annotations: { 'eu.egi.cloud.tag': '22.04-1' },
    });
    const read = readDiskManifest('m', bytes, 'application/vnd.oci.image.manifest.v1+json', '22.04');
    expect(read).toEqual({
      digest: sha256Digest(bytes),
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.egi.cloud.vm-image.v1',
      configMediaType: 'application/vnd.oci.empty.v1+json',
      disk: layer,
      annotations: { 'eu.egi.cloud.tag': '22.04-1' },
    });
  });

  it('reads the OCI artifact manifest of oras 1.0 (blobs instead of layers)', () => {
    const bytes = Buffer.from(
      JSON.stringify({
        mediaType: 'application/vnd.oci.artifact.manifest.v1+json',
        artifactType: 'application/x-vm',
        blobs: [layer],
      }),
    );
    expect(readDiskManifest('m', bytes, 'application/vnd.oci.artifact.manifest.v1+json', '1').disk).toEqual(layer);
  });

  it('refuses an index, a Docker container manifest and a manifest whose type disagrees with the content type', () => {
    const index = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }),
    );
    expect(() => readDiskManifest('r/x:1', index, 'application/vnd.oci.image.index.v1+json', '1')).toThrow(
      'r/x:1: is an index of several manifests (application/vnd.oci.image.index.v1+json), not one disk image; select a tag that names an image manifest',
    );
    const docker = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
        config,
        layers: [layer],
      }),
    );
    expect(() =>
      readDiskManifest('r/x:1', docker, 'application/vnd.docker.distribution.manifest.v2+json', '1'),
    ).toThrow(
      /manifest type application\/vnd\.docker\.distribution\.manifest\.v2\+json is not supported \(a container image, not a disk image pushed with oras\)/,
    );
    expect(() =>
      readDiskManifest('r/x:1', manifest({}), 'application/vnd.docker.distribution.manifest.v2+json', '1'),
    ).toThrow(
      'r/x:1: the registry sent it as application/vnd.docker.distribution.manifest.v2+json, but the manifest says it is application/vnd.oci.image.manifest.v1+json',
    );
  });

  it('refuses bytes that are not the digest asked for, or not the digest the registry claims', () => {
    const bytes = manifest({});
    const other = `sha256:${'b'.repeat(64)}`;
    expect(() => readDiskManifest('r', bytes, undefined, other)).toThrow(
      `r: the manifest's bytes have digest ${sha256Digest(bytes)}, not ${other} as asked`,
    );
    expect(() => readDiskManifest('r', bytes, undefined, 'latest', other)).toThrow(
      `r: the registry says the manifest is ${other}, but its bytes have digest ${sha256Digest(bytes)}`,
    );
  });

  it('refuses two disk layers, and a foreign layer with external URLs', () => {
    expect(() => readDiskManifest('r', manifest({ layers: [layer, layer] }), undefined, '1')).toThrow(
      /expected exactly one layer of type application\/x-qemu-disk, found 2/,
    );
    expect(() =>
      readDiskManifest('r', manifest({ layers: [{ ...layer, urls: ['https://elsewhere/x'] }] }), undefined, '1'),
    ).toThrow(/foreign layer/);
  });
});

describe('annotations as properties', () => {
  it('names them as EGI does in Glance: org.openstack.glance.X as X, eu.egi.cloud.* and the OCI provenance as they are', () => {
    expect(
      annotationProperties({
        'org.openstack.glance.os_distro': 'ubuntu',
        'org.openstack.glance.os_admin_user': 'ubuntu',
        'eu.egi.cloud.tag': '22.04-20250301-1a2b3c4',
        'org.opencontainers.image.source': 'https://github.com/x/y',
        'com.example.unrelated': 'dropped',
        'org.openstack.glance.os_version': '',
      }),
    ).toEqual({
      os_distro: 'ubuntu',
      os_admin_user: 'ubuntu',
      'eu.egi.cloud.tag': '22.04-20250301-1a2b3c4',
      'org.opencontainers.image.source': 'https://github.com/x/y',
    });
  });

  it('maps the allow-list only: no snf-image, identity, checksum or Nova property can be set by an annotation', () => {
    const hostile = Object.fromEntries(
      [
        'ROOT_PARTITION',
        'root_partition',
        'USERS',
        'OSFAMILY',
        'EXCLUDE_ALL_TASKS',
        'EXCLUDE_TASK_FIXPARTITIONTABLE',
        'SWAP',
        'PASSWORD_HASHING_METHOD',
        'VMCATCHER_EVENT_SL_CHECKSUM_SHA512',
        'VMCATCHER_IL_DC_IDENTIFIER',
        'VMCATCHER_REVISION',
        'hw_firmware_type',
        'img_signature',
        '__proto__',
      ].map((key) => [`org.openstack.glance.${key}`, 'x']),
    );
    const properties = annotationProperties({
      ...hostile,
      'eu.egi.cloud.ROOT_PARTITION': '1',
      'org.openstack.glance.os_distro': 'ubuntu',
    });
    expect(properties).toEqual({ os_distro: 'ubuntu' });
    expect(Object.keys(ANNOTATION_PROPERTIES).sort()).toEqual(
      [
        'eu.egi.cloud.description',
        'eu.egi.cloud.tag',
        'org.opencontainers.image.created',
        'org.opencontainers.image.revision',
        'org.opencontainers.image.source',
        'org.openstack.glance.architecture',
        'org.openstack.glance.container_format',
        'org.openstack.glance.disk_format',
        'org.openstack.glance.os_admin_user',
        'org.openstack.glance.os_distro',
        'org.openstack.glance.os_type',
        'org.openstack.glance.os_version',
      ].sort(),
    );
  });
});

describe("a registry image's identity", () => {
  const disk = { mediaType: 'application/x-qemu-disk', digest: `sha256:${'b'.repeat(64)}`, size: 10 };
  const image = (annotations: Record<string, string>) =>
    registryImageToEvent({
      listId: registryListId('https://registry.egi.eu', 'egi_vm_images'),
      registry: new URL('https://registry.egi.eu/'),
      project: 'egi_vm_images',
      repository: 'egi_vm_images/ubuntu',
      tag: '22.04',
      manifest: {
        digest: `sha256:${'c'.repeat(64)}`,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        disk,
        annotations,
      },
    });

  it("is the configuration's registry and project and the repository's name: annotations naming another list change nothing", () => {
    const plain = image({});
    const forged = image({
      'org.openstack.glance.VMCATCHER_IL_DC_IDENTIFIER': 'other.example_other_project',
      'org.openstack.glance.VMCATCHER_DC_IDENTIFIER': 'debian',
      'org.openstack.glance.imageListId': 'registry.egi.eu/other_project',
      'org.opencontainers.image.title': 'debian',
      'org.opencontainers.image.ref.name': 'other_project/debian',
    });
    expect(forged).toMatchObject({ imageListId: 'registry.egi.eu/egi_vm_images', imageId: 'ubuntu', title: 'debian' });
    expect(imageIdentity(forged)).toEqual(imageIdentity(plain));
    const { properties } = buildImageProperties({ event: forged, options: {}, metadata: {} });
    expect(properties.VMCATCHER_IL_DC_IDENTIFIER).toBe(imageIdentity(plain).imageListId);
    expect(properties.VMCATCHER_DC_IDENTIFIER).toBe('ubuntu');
    expect(Object.keys(forged.properties ?? {})).toEqual(['org.opencontainers.image.ref.digest']);
  });
});

describe('a tag moved back (rollback)', () => {
  const disk = (hex: string) => ({
    mediaType: 'application/x-qemu-disk',
    digest: `sha256:${hex.repeat(64)}`,
    size: 10,
  });
  const manifest = (hex: string, created?: string): DiskManifest => ({
    digest: `sha256:${'c'.repeat(64)}`,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    disk: disk(hex),
    annotations: created ? { 'org.opencontainers.image.created': created } : ({} as Record<string, string>),
  });
  const accepted = {
    origin: 'registry' as const,
    imageId: 'ubuntu',
    version: '22.04',
    checksumSha256: 'a'.repeat(64),
    properties: { 'org.opencontainers.image.created': '2025-03-01T00:00:00Z' },
    extra: {},
  };

  it('is an older tag, or the same tag on a disk whose manifest was created before the accepted one', () => {
    expect(rollback('20.04', manifest('b', '2025-04-01T00:00:00Z'), accepted)).toBe(
      'tag 20.04 is older than 22.04, the tag registered last',
    );
    expect(rollback('22.04', manifest('b', '2025-01-01T00:00:00Z'), accepted)).toBe(
      'tag 22.04 moved back to a manifest created 2025-01-01T00:00:00Z, before the one registered last (2025-03-01T00:00:00Z)',
    );
  });

  it('is not a newer tag, a newer manifest, the same disk, or a manifest that gives no creation time', () => {
    expect(rollback('24.04', manifest('b', '2020-01-01T00:00:00Z'), accepted)).toBeUndefined();
    expect(rollback('22.04', manifest('b', '2025-04-01T00:00:00Z'), accepted)).toBeUndefined();
    expect(rollback('22.04', manifest('a', '2020-01-01T00:00:00Z'), accepted)).toBeUndefined();
    expect(rollback('22.04', manifest('b'), accepted)).toBeUndefined();
  });
});

describe('the sha256 of an event', () => {
  const sha256 = 'c'.repeat(64);

  it('travels in the flat message as VMCATCHER_EVENT_SL_CHECKSUM_SHA256 and names the revision when there is no sha512', () => {
    const event = eventFromFlat(
      { VMCATCHER_EVENT_DC_IDENTIFIER: 'ubuntu', VMCATCHER_EVENT_SL_CHECKSUM_SHA256: sha256.toUpperCase() },
      'message',
    );
    expect(event.checksumSha256).toBe(sha256);
    expect(eventToFlat(event).VMCATCHER_EVENT_SL_CHECKSUM_SHA256).toBe(sha256);
    expect(imageIdentity(event).revision).toBe(`sha256-${sha256.slice(0, 32)}`);
    expect(imageIdentity({ ...event, checksumSha512: 'd'.repeat(128) }).revision).toBe(`sha512-${'d'.repeat(32)}`);
  });

  it('refuses a value that is not a sha256', () => {
    expect(() => eventFromFlat({ VMCATCHER_EVENT_SL_CHECKSUM_SHA256: 'abc' }, 'message')).toThrow(
      'VMCATCHER_EVENT_SL_CHECKSUM_SHA256: must be 64 hexadecimal digits (a sha256)',
    );
  });
});

describe('registry subscriptions in the configuration', () => {
  const credentials = { egi: 'robot$egi+reader:secret' };

  it('are written among subscriptions and parsed apart from the list subscriptions', () => {
    const parsed = parseConfig(
      {
        security: { credentials },
        subscriptions: [
          { url: 'https://lists.example.org/list.json' },
          {
            registry: 'https://registry.egi.eu',
            project: 'egi_vm_images',
            tags: '^[^-]+$',
            credential: 'egi',
            every: '1h',
          },
        ],
      },
      'test',
    );
    expect(parsed.subscriptions.map((s) => s.url)).toEqual(['https://lists.example.org/list.json']);
    expect(parsed.registrySubscriptions).toEqual([
      {
        registry: 'https://registry.egi.eu',
        project: 'egi_vm_images',
        tags: '^[^-]+$',
        credential: 'egi',
        every: 3600_000,
      },
    ]);
  });

  it('name the key that is wrong', () => {
    const parse = (sub: Record<string, unknown>) => () =>
      parseConfig({ security: { credentials }, subscriptions: [{ url: 'https://l.example/x' }, sub] }, 'test');
    expect(parse({ registry: 'https://registry.egi.eu/egi_vm_images', project: 'egi_vm_images' })).toThrow(
      "test: invalid configuration key 'subscriptions.1.registry': name the registry only (https://registry.egi.eu); the project goes in project",
    );
    expect(parse({ registry: 'https://registry.egi.eu', project: 'egi_vm_images', tags: '[' })).toThrow(
      "invalid configuration key 'subscriptions.1.tags': must be a regular expression",
    );
    expect(parse({ registry: 'https://registry.egi.eu', project: 'egi_vm_images', credential: 'nope' })).toThrow(
      "invalid configuration key 'subscriptions.1.credential': credential 'nope' is not defined in security.credentials",
    );
    expect(parse({ registry: 'https://u:p@registry.egi.eu', project: 'egi_vm_images' })).toThrow(
      /subscriptions\.1\.registry': the URL carries credentials/,
    );
    expect(parse({ registry: 'https://registry.egi.eu', project: 'egi_vm_images', url: 'https://x' })).toThrow(
      /subscriptions\.1': Unrecognized key: "url"/,
    );
  });

  it('take a token realm (https), page and name bounds, and plain http only for a test registry on 127.0.0.1', () => {
    const parse = (sub: Record<string, unknown>) =>
      parseConfig({ security: { credentials }, subscriptions: [{ project: 'egi_vm_images', ...sub }] }, 'test')
        .registrySubscriptions[0];
    expect(
      parse({
        registry: 'https://registry.gitlab.example',
        tokenRealm: 'https://gitlab.example/jwt/auth',
        maxPages: 10,
        maxItems: 500,
      }),
    ).toMatchObject({ tokenRealm: 'https://gitlab.example/jwt/auth', maxPages: 10, maxItems: 500 });
    expect(
      parse({
        registry: 'http://127.0.0.1:5000',
        tokenRealm: 'http://127.0.0.1:5001/token',
        plainHttpOnLoopback: true,
      }),
    ).toMatchObject({
      plainHttpOnLoopback: true,
    });
    expect(() => parse({ registry: 'https://registry.egi.eu', tokenRealm: 'http://auth.example/token' })).toThrow(
      "invalid configuration key 'subscriptions.0.tokenRealm': must be https: the registry login is sent there",
    );
    expect(() => parse({ registry: 'http://registry.example', plainHttpOnLoopback: true })).toThrow(
      "invalid configuration key 'subscriptions.0.plainHttpOnLoopback': is for a test registry on 127.0.0.1 only",
    );
    expect(() => parse({ registry: 'https://registry.egi.eu', maxPages: 0 })).toThrow(/subscriptions\.0\.maxPages/);
  });

  it('refuse the same project twice', () => {
    const sub = { registry: 'https://registry.egi.eu', project: 'egi_vm_images' };
    expect(() =>
      parseConfig({ subscriptions: [sub, { ...sub, registry: 'https://registry.egi.eu:443' }] }, 'test'),
    ).toThrow("invalid configuration key 'subscriptions.1.project': the same project as subscriptions.0");
  });
});

describe('registry annotations on the registered image', () => {
  it('become Synnefo properties (OS_DISTRO, EU_EGI_CLOUD_TAG) that never replace an identity or deploy property', () => {
    const event = eventFromFlat(
      { VMCATCHER_EVENT_DC_IDENTIFIER: 'ubuntu', VMCATCHER_EVENT_SL_CHECKSUM_SHA256: 'e'.repeat(64) },
      'message',
    );
    event.properties = {
      os_distro: 'ubuntu',
      'eu.egi.cloud.tag': '22.04-1',
      osfamily: 'windows',
      'vmcatcher.revision': 'forged',
    };
    const { properties } = buildImageProperties({ event, options: {}, metadata: { OSFAMILY: 'linux' } });
    expect(properties).toMatchObject({
      OS_DISTRO: 'ubuntu',
      EU_EGI_CLOUD_TAG: '22.04-1',
      OSFAMILY: 'linux',
      VMCATCHER_REVISION: `sha256-${'e'.repeat(32)}`,
    });
    expect(properties.VMCATCHER_EVENT_SL_CHECKSUM_SHA256).toBe('e'.repeat(64));
  });
});
