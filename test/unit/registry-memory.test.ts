import { describe, expect, it } from '@jest/globals';
import { ImageEventSchema } from '../../core/event.js';
import {
  acceptedManifestOf,
  AcceptedImages,
  encodeAcceptedImages,
  encodeTags,
  projectValidator,
  RememberedTags,
  type AcceptedManifest,
} from '../../oci/remembered.js';

/**
 * What a registry subscription's copy remembers between runs, in its bounded form
 * (oci/remembered.ts): every tag's digest and what a later read needs of each image accepted
 * read back exactly, at a fixed cost per tag and about 100 bytes per image, and the project's
 * validator equal exactly when every selected tag names the same manifest.
 */
const digest = (c: string) => `sha256:${c.repeat(64)}`;

describe("a registry project's remembered tags", () => {
  const manifests = {
    ubuntu: { '22.04': digest('a'), latest: digest('a'), '24.04': digest('b') },
    almalinux: { '9': digest('c') },
  };

  it('gives back the digest of every remembered tag, and none for a tag or image it never saw', () => {
    const tags = new RememberedTags(encodeTags(manifests));
    for (const [imageId, byTag] of Object.entries(manifests))
      for (const [tag, named] of Object.entries(byTag)) expect(tags.digestOf(imageId, tag)).toBe(named);
    expect(tags.digestOf('ubuntu', '20.04')).toBeUndefined();
    expect(tags.digestOf('debian', '22.04')).toBeUndefined();
    // A tag of one image is not the same tag of another.
    expect(tags.digestOf('almalinux', '22.04')).toBeUndefined();
    expect(new RememberedTags(undefined).digestOf('ubuntu', '22.04')).toBeUndefined();
  });

  it('costs 40 bytes a tag whatever the names (53 in base64), and leaves out what is not a sha256 digest', () => {
    const long = { [`repository-${'x'.repeat(100)}`]: { [`tag-${'y'.repeat(120)}`]: digest('d') } };
    expect(Buffer.from(encodeTags(manifests), 'base64')).toHaveLength(4 * 40);
    expect(Buffer.from(encodeTags(long), 'base64')).toHaveLength(40);
    expect(encodeTags({ ubuntu: { '22.04': 'sha512:abc', latest: digest('a') } })).toBe(
      encodeTags({ ubuntu: { latest: digest('a') } }),
    );
  });
});

describe("a registry project's accepted images", () => {
  const event = (overrides: Record<string, unknown> = {}) =>
    ImageEventSchema.parse({
      origin: 'registry',
      imageListId: 'registry.example.org/egi_vm_images',
      imageId: 'ubuntu',
      version: '22.04',
      uri: `https://registry.example.org/v2/egi_vm_images/ubuntu/blobs/${digest('e')}`,
      checksumSha256: 'e'.repeat(64),
      properties: {
        'org.opencontainers.image.ref.digest': digest('f'),
        'org.opencontainers.image.created': '2025-03-01T00:00:00Z',
      },
      extra: {},
      ...overrides,
    });

  it("keeps of an event its tag, manifest, disk and creation time, and reads them back by the image's id", () => {
    const ubuntu = acceptedManifestOf(event())!;
    expect(ubuntu).toEqual({
      version: '22.04',
      manifest: digest('f'),
      checksumSha256: 'e'.repeat(64),
      created: '2025-03-01T00:00:00Z',
    });
    const alma: AcceptedManifest = { version: '9', manifest: digest('1'), checksumSha256: '2'.repeat(64) };
    const images = new AcceptedImages(
      encodeAcceptedImages(
        new Map([
          ['ubuntu', ubuntu],
          ['almalinux', alma],
        ]),
      ),
    );
    expect(images.of('ubuntu')).toEqual(ubuntu);
    expect(images.of('almalinux')).toEqual(alma);
    expect(images.of('debian')).toBeUndefined();
  });

  it('costs 74 bytes an image besides its tag and creation time', () => {
    const one = new Map([['ubuntu', acceptedManifestOf(event())!]]);
    expect(Buffer.from(encodeAcceptedImages(one), 'base64')).toHaveLength(74 + '22.04'.length + 20);
  });

  it('keeps nothing of an event that was not made from a registry manifest', () => {
    expect(acceptedManifestOf(event({ properties: {} }))).toBeUndefined();
    expect(acceptedManifestOf(event({ version: undefined }))).toBeUndefined();
    expect(acceptedManifestOf(event({ checksumSha256: undefined, checksumSha512: 'a'.repeat(128) }))).toBeUndefined();
  });
});

describe("a registry project's validator", () => {
  const what = { listId: 'registry.example.org/egi_vm_images', registry: 'https://registry.example.org/' };
  const manifests = { ubuntu: { '22.04': digest('a'), latest: digest('a') }, almalinux: { '9': digest('c') } };

  it('is the same for the same tags naming the same manifests, in any order', () => {
    const reordered = { almalinux: { '9': digest('c') }, ubuntu: { latest: digest('a'), '22.04': digest('a') } };
    expect(projectValidator(what, reordered)).toBe(projectValidator(what, manifests));
  });

  it('changes with a moved tag, a tag more or less, another VO or another registry', () => {
    const base = projectValidator(what, manifests);
    const others = [
      projectValidator(what, { ...manifests, almalinux: { '9': digest('d') } }),
      projectValidator(what, { ...manifests, almalinux: { '9': digest('c'), '9.1': digest('c') } }),
      projectValidator(what, { ubuntu: manifests.ubuntu }),
      projectValidator({ ...what, vo: 'vo.example.org' }, manifests),
      projectValidator({ ...what, registry: 'https://mirror.example.org/' }, manifests),
    ];
    expect(new Set([base, ...others]).size).toBe(others.length + 1);
  });
});
