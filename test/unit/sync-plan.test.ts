import type { ImageEvent } from '../../core/event.js';
import { imageIdentity, type AcceptedList, type ListedImage } from '../../core/workflow-contract.js';
import type { CloudImage } from '../../clouds/target.js';
import { compareVersions } from '../../core/event.js';
import { plannedLoss, planSync } from '../../subscriptions/sync-plan.js';

const LIST = 'list-1';
const sha = (c: string) => c.repeat(128);
const image = (id: string, checksum: string, extra: Partial<ImageEvent> = {}): ListedImage => ({
  event: {
    origin: 'image-list',
    imageListId: LIST,
    imageId: id,
    title: `Image ${id}`,
    uri: `https://h/${id}.img`,
    checksumSha512: checksum,
    extra: {},
    ...extra,
  },
  expired: false,
});
const inCloud = (listed: ListedImage, isPublic = true, withChecksum = true): CloudImage => ({
  cloudImageId: `cloud-${listed.event.imageId}-${listed.event.checksumSha512!.slice(0, 4)}`,
  imageId: listed.event.imageId!,
  revision: imageIdentity(listed.event).revision,
  checksumSha512: withChecksum ? listed.event.checksumSha512 : undefined,
  isPublic,
});
const accepted = (images: ListedImage[]): AcceptedList => ({ listId: LIST, version: '1', images });

describe('planSync: what one sync of a subscribed list does', () => {
  const a1 = image('a', sha('1'));
  const b1 = image('b', sha('2'));
  const c1 = image('c', sha('3'));

  test('first sync: every image of the list is registered, as new', () => {
    const plan = planSync({ expireAction: 'make-private', listId: LIST, current: [a1, b1, c1], cloud: [] });
    expect(plan.register.map((r) => [r.event.imageId, r.reason])).toEqual([
      ['a', 'new'],
      ['b', 'new'],
      ['c', 'new'],
    ]);
    expect(plan.expire).toEqual([]);
  });

  test('an unchanged list whose images are all in the cloud costs nothing', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1, b1],
      previous: accepted([a1, b1]),
      cloud: [inCloud(a1), inCloud(b1)],
    });
    expect(plan).toEqual({ register: [], expire: [], unchanged: ['a', 'b'], unresolved: [], replacing: [] });
  });

  test('v2: a new revision is registered while the old one stays; a removed image expired; an added one registered', () => {
    const a2 = image('a', sha('4'), { version: '2' });
    const d1 = image('d', sha('5'));
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a2, b1, d1],
      previous: accepted([a1, b1, c1]),
      cloud: [inCloud(a1), inCloud(b1), inCloud(c1)],
    });
    expect(plan.register.map((r) => [r.event.imageId, r.reason, r.event.checksumSha512])).toEqual([
      ['a', 'updated', sha('4')],
      ['d', 'new', sha('5')],
    ]);
    // One event per changed image: the old revision is offered until its successor is registered.
    expect(plan.expire.map((e) => [e.event.imageId, e.reason, e.event.checksumSha512, e.event.type])).toEqual([
      ['c', 'removed', sha('3'), 'ExpirePostfix'],
    ]);
    expect(plan.replacing).toEqual(['a']);
    expect(plan.unchanged).toEqual(['b']);
  });

  test('the run that finds the new revision registered expires the old one by its checksum', () => {
    const a2 = image('a', sha('4'), { version: '2' });
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a2, b1],
      previous: accepted([a2, b1]),
      cloud: [inCloud(a1), inCloud(a2), inCloud(b1)],
    });
    expect(plan.register).toEqual([]);
    expect(plan.expire.map((e) => [e.event.imageId, e.reason, e.event.checksumSha512, e.event.type])).toEqual([
      ['a', 'old-revision', sha('1'), 'ExpirePostfix'],
    ]);
    expect(plan.replacing).toEqual([]);
    expect(plan.unchanged).toEqual(['a', 'b']);
  });

  test('an image deleted from the cloud by hand is registered again', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1, b1],
      previous: accepted([a1, b1]),
      cloud: [inCloud(a1)],
    });
    expect(plan.register.map((r) => [r.event.imageId, r.reason])).toEqual([['b', 'missing-from-cloud']]);
  });

  test('an image whose own dc:date:expires passed is expired, not registered', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1, { ...b1, expired: true }],
      previous: accepted([a1, b1]),
      cloud: [inCloud(a1), inCloud(b1)],
    });
    expect(plan.register).toEqual([]);
    expect(plan.expire.map((e) => [e.event.imageId, e.reason])).toEqual([['b', 'expired']]);
  });

  test('an old revision already private is left alone; a public one without a sha512 is reported, not guessed', () => {
    const a2 = image('a', sha('4'));
    const privateOld = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a2],
      cloud: [inCloud(a2), inCloud(a1, false)],
    });
    expect(privateOld.expire).toEqual([]);
    const noChecksum = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a2],
      cloud: [inCloud(a2), inCloud(a1, true, false)],
    });
    expect(noChecksum.expire).toEqual([]);
    expect(noChecksum.unresolved).toEqual([
      { imageId: 'a', revision: imageIdentity(a1.event).revision, cloudImageId: inCloud(a1).cloudImageId },
    ]);
  });

  test('an image that left the list and is already private costs nothing with make-private; with unregister it leaves the cloud', () => {
    const gone = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1],
      previous: accepted([a1]),
      cloud: [inCloud(a1), inCloud(c1, false)],
    });
    expect(gone.expire).toEqual([]);
    const unregister = planSync({
      expireAction: 'unregister',
      listId: LIST,
      current: [a1],
      previous: accepted([a1]),
      cloud: [inCloud(a1), inCloud(c1, false)],
    });
    expect(unregister.expire.map((e) => [e.event.imageId, e.reason])).toEqual([['c', 'removed']]);
  });

  test('an expired revision is named by what the last accepted copy knew of it (title, version)', () => {
    const old = image('a', sha('1'), { version: '1' });
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [image('a', sha('4'), { version: '2' })],
      previous: accepted([old]),
      cloud: [inCloud(old), inCloud(image('a', sha('4'), { version: '2' }))],
    });
    expect(plan.expire.map((e) => [e.reason, e.event.version, e.event.title])).toEqual([
      ['old-revision', '1', 'Image a'],
    ]);
  });

  test('a revision accepted last time but not in the cloud yet (still registering) is expired when the list drops it', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1],
      previous: accepted([a1, b1]),
      cloud: [inCloud(a1)],
    });
    expect(plan.expire.map((e) => [e.event.imageId, e.reason, e.event.checksumSha512])).toEqual([
      ['b', 'removed', sha('2')],
    ]);
  });

  test('an image of the list in the cloud that the list never named (state lost) is expired, each revision once', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1],
      cloud: [inCloud(a1), inCloud(c1)],
    });
    expect(plan.expire.map((e) => [e.event.imageId, e.reason])).toEqual([['c', 'removed']]);
  });
});

describe('planSync: a read problem never becomes an expiry', () => {
  const a1 = image('a', sha('1'));
  const b1 = image('b', sha('2'));
  const c1 = image('c', sha('3'));

  test('an image whose read failed (a registry tag, an invalid list entry naming its identifier) keeps every revision it has', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1],
      previous: accepted([a1, b1, c1]),
      cloud: [inCloud(a1), inCloud(b1), inCloud(c1)],
      keep: ['b'],
    });
    expect(plan.expire.map((e) => [e.event.imageId, e.reason])).toEqual([['c', 'removed']]);
  });

  test('a kept image that was accepted last but is not in the cloud yet is not expired either', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1],
      previous: accepted([a1, b1]),
      cloud: [inCloud(a1)],
      keep: ['b'],
    });
    expect(plan.expire).toEqual([]);
  });

  test('an incomplete read (an invalid entry without identifier) expires nothing as removed, but still replaces revisions and honours expiry dates', () => {
    const a2 = image('a', sha('4'), { version: '2' });
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a2, { ...b1, expired: true }],
      previous: accepted([a1, b1, c1]),
      cloud: [inCloud(a1), inCloud(a2), inCloud(b1), inCloud(c1)],
      incomplete: true,
    });
    expect(plan.expire.map((e) => [e.event.imageId, e.reason])).toEqual([
      ['a', 'old-revision'],
      ['b', 'expired'],
    ]);
  });

  test('a list whose entries all failed validation, with their identifiers: nothing expired', () => {
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [],
      previous: accepted([a1, b1]),
      cloud: [inCloud(a1), inCloud(b1)],
      keep: ['a', 'b'],
    });
    expect(plan.expire).toEqual([]);
    expect(plan.register).toEqual([]);
  });
});

describe('plannedLoss: what the mass-expiry guard counts', () => {
  const [a1, b1, c1, d1] = ['a', 'b', 'c', 'd'].map((id, i) => image(id, sha(String(i + 1))));

  test('images removed or expired among those live in the cloud count; a replaced revision does not', () => {
    const a2 = image('a', sha('9'));
    const cloud = [inCloud(a1), inCloud(b1), inCloud(c1), inCloud(d1)];
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a2, { ...b1, expired: true }],
      previous: accepted([a1, b1, c1, d1]),
      cloud,
    });
    expect(plannedLoss(plan, cloud, 'make-private')).toEqual({ leaving: 3, registered: 4, removed: 2, expired: 1 });
  });

  test('an image already private is not registered any more: it neither counts nor is counted', () => {
    const cloud = [inCloud(a1), inCloud(b1, false)];
    const plan = planSync({ expireAction: 'make-private', listId: LIST, current: [], cloud });
    expect(plannedLoss(plan, cloud, 'make-private')).toEqual({ leaving: 1, registered: 1, removed: 1, expired: 0 });
  });

  test('a registration still on its way (accepted last, not in the cloud) is not a registered image', () => {
    const cloud = [inCloud(a1)];
    const plan = planSync({
      expireAction: 'make-private',
      listId: LIST,
      current: [a1],
      previous: accepted([a1, b1]),
      cloud,
    });
    expect(plan.expire.map((e) => e.event.imageId)).toEqual(['b']);
    expect(plannedLoss(plan, cloud, 'make-private')).toEqual({ leaving: 0, registered: 1, removed: 0, expired: 0 });
  });
});

describe('compareVersions: hv:version in natural order', () => {
  test.each([
    ['1.10', '1.9', 1],
    ['2', '10', -1],
    ['20240101', '20231231', 1],
    ['1.0', '1.0', 0],
  ])('%s vs %s', (a, b, sign) => {
    expect(Math.sign(compareVersions(a, b))).toBe(sign);
  });
});

describe('planSync: registry images, whose revision is their disk layer sha256', () => {
  const REGISTRY = 'registry.example/egi_vm_images';
  const layer = (c: string) => c.repeat(64);
  const tagged = (id: string, tag: string, sha256: string): ListedImage => ({
    event: {
      origin: 'registry',
      imageListId: REGISTRY,
      imageId: id,
      version: tag,
      uri: `https://registry.example/v2/egi_vm_images/${id}/blobs/sha256:${sha256}`,
      checksumSha256: sha256,
      extra: {},
    },
    expired: false,
  });
  const held = (listed: ListedImage, withChecksum = true): CloudImage => ({
    cloudImageId: `cloud-${listed.event.imageId}`,
    imageId: listed.event.imageId!,
    revision: imageIdentity(listed.event).revision,
    checksumSha256: withChecksum ? listed.event.checksumSha256 : undefined,
    isPublic: true,
  });

  test('a tag moved to a new layer: the new revision is registered, and once it is, the replaced one is expired by its sha256', () => {
    const before = tagged('ubuntu', '22.04', layer('a'));
    const after = tagged('ubuntu', '22.04', layer('b'));
    const plan = planSync({
      expireAction: 'make-private',
      listId: REGISTRY,
      current: [after],
      previous: { listId: REGISTRY, images: [before] },
      cloud: [held(before)],
    });
    expect(plan.register.map((r) => [r.event.imageId, r.reason, r.event.checksumSha256])).toEqual([
      ['ubuntu', 'updated', layer('b')],
    ]);
    // The replaced layer's image stays until the new one is registered; the next run expires it.
    expect(plan.expire).toEqual([]);
    const next = planSync({
      expireAction: 'make-private',
      listId: REGISTRY,
      current: [after],
      previous: { listId: REGISTRY, images: [after] },
      cloud: [held(before), held(after)],
    });
    expect(next.expire.map((e) => [e.event.imageId, e.reason, e.event.checksumSha256, e.event.checksumSha512])).toEqual(
      [['ubuntu', 'old-revision', layer('a'), undefined]],
    );
    expect(next.register).toEqual([]);
    expect(plan.unresolved).toEqual([]);
  });

  test('a cloud image without its sha256 property is left for an operator, as one without a sha512', () => {
    const before = tagged('ubuntu', '22.04', layer('a'));
    const plan = planSync({
      expireAction: 'make-private',
      listId: REGISTRY,
      current: [tagged('ubuntu', '22.04', layer('b'))],
      cloud: [held(before, false), held(tagged('ubuntu', '22.04', layer('b')))],
    });
    expect(plan.expire).toEqual([]);
    expect(plan.unresolved).toEqual([
      { imageId: 'ubuntu', revision: `sha256-${layer('a').slice(0, 32)}`, cloudImageId: 'cloud-ubuntu' },
    ]);
  });
});
