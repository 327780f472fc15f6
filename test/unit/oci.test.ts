import { describe, expect, it } from '@jest/globals';
import { parseConfig } from '../../core/config.js';
import { eventFromFlat, eventToFlat } from '../../core/event.js';
import { buildImageProperties } from '../../clouds/synnefo/image-properties.js';
import { imageIdentity } from '../../core/workflow-contract.js';
import { annotationProperties } from '../../oci/annotations.js';
import { parseChallenges } from '../../oci/auth.js';
import { nextLink } from '../../oci/client.js';
import { readDiskManifest, sha256Digest } from '../../oci/manifest.js';

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
  it('follows rel="next" as a path on the registry, whatever host the link names', () => {
    const base = new URL('https://registry.egi.eu/v2/_catalog?n=100');
    expect(nextLink('</v2/_catalog?last=b&n=100>; rel="next"', base)).toBe('/v2/_catalog?last=b&n=100');
    expect(
      nextLink(
        '<https://other.example/api/v2.0/projects/p/repositories?page=2&page_size=100>; rel="next", </x?page=1>; rel="prev"',
        base,
      ),
    ).toBe('/api/v2.0/projects/p/repositories?page=2&page_size=100');
    expect(nextLink('</x?page=1>; rel="prev"', base)).toBeUndefined();
    expect(nextLink(undefined, base)).toBeUndefined();
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
        'org.openstack.glance.empty': '',
      }),
    ).toEqual({
      os_distro: 'ubuntu',
      os_admin_user: 'ubuntu',
      'eu.egi.cloud.tag': '22.04-20250301-1a2b3c4',
      'org.opencontainers.image.source': 'https://github.com/x/y',
    });
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
