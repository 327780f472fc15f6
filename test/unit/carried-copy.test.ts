import type { CloudImage } from '../../clouds/target.js';
import { imageIdentity, shortDigest, type ListedImage } from '../../core/workflow-contract.js';
import {
  carriedCopy,
  cloudMatches,
  decodeDigests,
  digest64,
  encodeDigests,
  idDigest,
  MAX_NAMED,
  revisionDigest,
  SMALL_COPY_BYTES,
} from '../../subscriptions/carried-copy.js';
import { planSync } from '../../subscriptions/sync-plan.js';
import { boundedSummary } from '../../subscriptions/sync-run.js';
import { describeSummary } from '../../cli/commands/subscriptions.js';
import { syncSummaryMarkdown } from '../../core/workflow-contract.js';

const LIST = 'list-1';
const sha = (c: string) => c.repeat(128);
const image = (id: string, checksum: string, expired = false): ListedImage => ({
  event: {
    origin: 'image-list',
    imageListId: LIST,
    imageId: id,
    title: `Image ${id}`,
    checksumSha512: checksum,
    extra: {},
  },
  expired,
});
const inCloud = (listed: ListedImage, isPublic = true): CloudImage => ({
  cloudImageId: `cloud-${listed.event.imageId}`,
  imageId: imageIdentity(listed.event).imageId,
  revision: imageIdentity(listed.event).revision,
  checksumSha512: listed.event.checksumSha512,
  isPublic,
});

describe('the carried copy of a list: its metadata and two digests an image, bounded whatever the list', () => {
  test('digest64 is the FNV-1a 64-bit digest workflows already use (shortDigest), without BigInt', () => {
    for (const value of ['', 'a', 'ünïcödé ✓', 'x'.repeat(1000), `${LIST}\u0000a\u0000sha512-${sha('1')}`])
      expect(digest64(value)).toBe(shortDigest(value));
  });

  test('the digests round-trip: ids, wanted and named revisions, kept ids; an expired entry is named, not wanted', () => {
    const [a, b, gone] = [image('a', sha('1')), image('b', sha('2')), image('gone', sha('3'), true)];
    const digests = decodeDigests(encodeDigests([a, b, gone], ['broken']));
    const rev = (i: ListedImage) => revisionDigest(imageIdentity(i.event).imageId, imageIdentity(i.event).revision);
    expect(digests.count).toBe(3);
    expect([...digests.ids].sort()).toEqual([idDigest('a'), idDigest('b'), idDigest('gone')].sort());
    expect([...digests.wanted].sort()).toEqual([rev(a), rev(b)].sort());
    expect(digests.named.has(rev(gone))).toBe(true);
    expect([...digests.kept]).toEqual([idDigest('broken')]);
  });

  test('5,000 images carry 17 bytes each (113 KiB of base64), not their entries', () => {
    const images = Array.from({ length: 5000 }, (_, n) => image(`image-${n}`, sha(String(n % 10))));
    const copy = carriedCopy({ listId: LIST, version: '1', etag: '"v1"', images }, { keepImages: false });
    expect(copy.images).toEqual([]);
    expect(copy.imageCount).toBe(5000);
    expect(copy.digests!.length).toBe(Math.ceil((5000 * 17) / 3) * 4);
    expect(decodeDigests(copy.digests!).count).toBe(5000);
    expect(copy).toMatchObject({ listId: LIST, version: '1', etag: '"v1"' });
  });

  test('invalid entries beyond the first hundred are counted, not carried', () => {
    const invalid = Array.from({ length: 250 }, (_, n) => ({ identifier: `bad-${n}`, problem: 'no hv:uri' }));
    const copy = carriedCopy({ listId: LIST, images: [], invalid }, { keepImages: false });
    expect(copy.invalid).toHaveLength(MAX_NAMED);
    expect(copy.invalidCount).toBe(250);
  });

  describe('cloudMatches: a 304 has nothing to deliver when the cloud is what the list wants', () => {
    const [a, b] = [image('a', sha('1')), image('b', sha('2'))];
    const digests = decodeDigests(encodeDigests([a, b, image('old', sha('9'), true)], ['kept']));
    test('every wanted revision in the cloud, nothing else live: nothing to do', () => {
      expect(
        cloudMatches(digests, [inCloud(a), inCloud(b), inCloud(image('old', sha('9')), false)], 'make-private', false),
      ).toBe(true);
    });
    test('a wanted revision missing from the cloud: read the list again', () => {
      expect(cloudMatches(digests, [inCloud(a)], 'make-private', false)).toBe(false);
    });
    test('an image the list called expired still public: read the list again', () => {
      expect(
        cloudMatches(digests, [inCloud(a), inCloud(b), inCloud(image('old', sha('9')))], 'make-private', false),
      ).toBe(false);
    });
    test('a private image the list does not want is nothing with make-private, but must leave with unregister', () => {
      const stray = inCloud(image('stray', sha('5')), false);
      expect(cloudMatches(digests, [inCloud(a), inCloud(b), stray], 'make-private', false)).toBe(true);
      expect(cloudMatches(digests, [inCloud(a), inCloud(b), stray], 'unregister', false)).toBe(false);
    });
    test('a kept image stays; an unnamed one stays only when the read was incomplete', () => {
      const kept = inCloud(image('kept', sha('6')));
      const stray = inCloud(image('stray', sha('5')));
      expect(cloudMatches(digests, [inCloud(a), inCloud(b), kept], 'make-private', false)).toBe(true);
      expect(cloudMatches(digests, [inCloud(a), inCloud(b), stray], 'make-private', false)).toBe(false);
      expect(cloudMatches(digests, [inCloud(a), inCloud(b), stray], 'make-private', true)).toBe(true);
    });
  });

  describe('planSync against a copy carrying digests', () => {
    // Enough images that the copy carries digests, not the images.
    const many = Array.from({ length: 400 }, (_, n) => image(`img-${n}`, sha(String(n % 10))));
    const [a1, b1, c1] = [many[0]!, many[1]!, many[2]!];
    const a2 = image('img-0', sha('a'));
    const d1 = image('new-d', sha('d'));
    const copy = carriedCopy({ listId: LIST, version: '1', images: many }, { keepImages: false });
    test('the copy is digests only', () => {
      expect(JSON.stringify(many).length).toBeGreaterThan(SMALL_COPY_BYTES);
      expect(copy.images).toEqual([]);
    });
    test('new, updated and missing-from-cloud are told from the digests; a removed image is named by the cloud', () => {
      const rest = many.slice(3);
      const removed = { ...inCloud(c1), title: 'Image img-2 from the cloud', version: '7' };
      const plan = planSync({
        listId: LIST,
        current: [a2, b1, d1, ...rest],
        previous: copy,
        cloud: [inCloud(a1), removed, ...rest.map((i) => inCloud(i))],
        expireAction: 'make-private',
      });
      expect(plan.register.map((r) => [r.event.imageId, r.reason])).toEqual([
        ['img-0', 'updated'],
        ['img-1', 'missing-from-cloud'],
        ['new-d', 'new'],
      ]);
      const expired = plan.expire.map((e) => [e.event.imageId, e.reason, e.event.title, e.event.version]);
      expect(expired).toContainEqual(['img-2', 'removed', 'Image img-2 from the cloud', '7']);
      // img-0's old revision stays until its new one is registered.
      expect(expired).toHaveLength(1);
      expect(plan.replacing).toEqual(['img-0']);
    });
    test('the old revision of an updated image, named by the digests, is expired once its new one is in the cloud', () => {
      const rest = many.slice(3);
      const plan = planSync({
        listId: LIST,
        current: [a2, b1, ...rest],
        previous: copy,
        cloud: [inCloud(a1), inCloud(a2), inCloud(b1), ...rest.map((i) => inCloud(i))],
        expireAction: 'make-private',
      });
      expect(plan.register).toEqual([]);
      expect(plan.expire.map((e) => [e.event.imageId, e.reason, e.event.title, e.event.version])).toEqual([
        ['img-0', 'old-revision', undefined, undefined],
      ]);
    });
    test('a registration the last run delivered, not in the cloud yet, is expired when the list drops it', () => {
      const pendingCopy = carriedCopy(
        { listId: LIST, images: [...many, d1] },
        { keepImages: false, pending: [d1.event] },
      );
      expect(pendingCopy.pending).toEqual([
        {
          origin: 'image-list',
          imageListId: LIST,
          imageId: 'new-d',
          title: 'Image new-d',
          checksumSha512: sha('d'),
          extra: {},
        },
      ]);
      const plan = planSync({
        listId: LIST,
        current: many,
        previous: pendingCopy,
        cloud: many.map((i) => inCloud(i)),
        expireAction: 'make-private',
      });
      expect(plan.register).toEqual([]);
      expect(plan.expire.map((e) => [e.event.imageId, e.reason, e.event.checksumSha512])).toEqual([
        ['new-d', 'removed', sha('d')],
      ]);
    });
  });

  test('a summary names at most 100 images per category and counts the rest, in the CLI and the Web UI', () => {
    const registered = Array.from({ length: 250 }, (_, n) => ({
      imageId: `img-${n}`,
      title: `Image ${n}`,
      reason: 'new',
    }));
    const summary = boundedSummary({
      url: 'https://lists.example/big.list',
      listId: LIST,
      fetched: 'changed',
      registered,
      expired: [],
      unchanged: 4750,
      invalid: [],
      unresolved: [],
    });
    expect(summary.registered).toHaveLength(MAX_NAMED);
    expect(summary.counts).toEqual({ registered: 250, expired: 0, invalid: 0, unread: 0, unresolved: 0 });
    expect(describeSummary(summary)).toContain('250 to register: Image 0 (new), ');
    expect(describeSummary(summary)).toContain('Image 99 (new) (and 150 more); 0 to expire; 4750 unchanged');
    expect(syncSummaryMarkdown(summary)).toContain('250 registered, 0 expired, 4750 unchanged');
    expect(syncSummaryMarkdown(summary)).toContain('- Registered (and 150 more):');
  });
});
