import { glanceSite } from '../../clouds/glance/index.js';
import { synnefoSite } from '../../clouds/synnefo/index.js';
import { eventFromFlat } from '../../core/event.js';
import {
  childWorkflowId,
  expireWorkflowId,
  imageIdentity,
  imageRevisionWorkflowId,
  registerWorkflowId,
  registrationTarget,
  shortDigest,
  type RegistrationSite,
} from '../../core/workflow-contract.js';

const SHA = 'ab'.repeat(64);
const T = 'synnefo-cloud1';
const event = (flat: Record<string, string>) => eventFromFlat(flat, 'message');
const base = { VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list-1', VMCATCHER_EVENT_DC_IDENTIFIER: 'img-1' };

describe('registerWorkflowId: one id per image revision and target', () => {
  test.each([
    [
      'the sha512 names the revision when known',
      { ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA, VMCATCHER_EVENT_HV_VERSION: '1.0' },
      `register:${T}:list-1:img-1:sha512-${'ab'.repeat(16)}`,
    ],
    [
      'a checksum in upper case gives the same id',
      { ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA.toUpperCase() },
      `register:${T}:list-1:img-1:sha512-${'ab'.repeat(16)}`,
    ],
    [
      'else the declared version',
      { ...base, VMCATCHER_EVENT_HV_VERSION: '3.3.0-1' },
      `register:${T}:list-1:img-1:v-3.3.0-1`,
    ],
    [
      'else a digest of the download URL',
      { ...base, VMCATCHER_EVENT_HV_URI: 'https://h/x.ova' },
      `register:${T}:list-1:img-1:uri-${shortDigest('https://h/x.ova')}`,
    ],
    [
      'no list id: a fixed placeholder',
      { VMCATCHER_EVENT_DC_IDENTIFIER: 'img-1', VMCATCHER_EVENT_HV_VERSION: '2' },
      `register:${T}:no-list:img-1:v-2`,
    ],
    [
      'characters outside [A-Za-z0-9._-] are replaced',
      { ...base, VMCATCHER_EVENT_DC_IDENTIFIER: 'a b/c:d', VMCATCHER_EVENT_HV_VERSION: '1' },
      `register:${T}:list-1:a_b_c_d:v-1`,
    ],
  ])('%s', (_name, flat, id) => {
    expect(registerWorkflowId(event(flat), T)).toBe(id);
  });

  test('events differing only in fields outside the identity share the id; a new checksum does not', () => {
    const a = event({
      ...base,
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA,
      VMCATCHER_EVENT_DC_TITLE: 'A',
      VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
    });
    const b = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA, VMCATCHER_EVENT_DC_TITLE: 'B' });
    const c = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: 'cd'.repeat(64) });
    expect(registerWorkflowId(a, T)).toBe(registerWorkflowId(b, T));
    expect(registerWorkflowId(a, T)).not.toBe(registerWorkflowId(c, T));
  });

  test("ids stay within Temporal's limits for absurdly long identifiers", () => {
    const long = event({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'l'.repeat(500),
      VMCATCHER_EVENT_DC_IDENTIFIER: 'i'.repeat(500),
      VMCATCHER_EVENT_HV_VERSION: 'v'.repeat(500),
    });
    const target = registrationTarget({ cloud: 'c'.repeat(500) }, { type: 'synnefo', eventsChoose: true });
    for (const id of [
      imageRevisionWorkflowId(long, 'register', target),
      registerWorkflowId(long, target),
      expireWorkflowId(long, target),
    ]) {
      expect(id.length).toBeLessThanOrEqual(255);
    }
    const otherCloud = registrationTarget({ cloud: 'c'.repeat(499) + 'd' }, { type: 'synnefo', eventsChoose: true });
    expect(registerWorkflowId(long, otherCloud)).not.toBe(registerWorkflowId(long, target));
  });
});

describe('registrationTarget: the handler and the cloud are part of the identity', () => {
  const synnefo = (name?: string): RegistrationSite => synnefoSite({ cloud: name });
  const glance = (name: string): RegistrationSite => glanceSite({ name });
  test.each([
    ['the registering handler names the kamaki cloud of the event', { cloud: 'a' }, synnefo('other'), 'synnefo-a'],
    [
      'as it did under its old name, in messages and histories written before',
      { kamakiCloud: 'a' },
      synnefo('other'),
      'synnefo-a',
    ],
    ['else the configured default cloud', {}, synnefo('site'), 'synnefo-site'],
    ['no cloud at all: a fixed placeholder', {}, synnefo(), 'synnefo-default'],
    ['a Glance site: glance-<its name>', {}, glance('site-a'), 'glance-site-a'],
    [
      'a Glance site ignores a kamaki cloud the event names (its worker registers into Glance only)',
      { cloud: 'a' },
      glance('site-a'),
      'glance-site-a',
    ],
    [
      'a JustLogHandler trial never shares an id with a real registration',
      { handler: 'JustLogHandler' as const, kamakiCloud: 'a' },
      synnefo('a'),
      'log',
    ],
    ['nor does ThrowingHandler', { handler: 'ThrowingHandler' as const }, synnefo('a'), 'throwing'],
    ['nor on a Glance site', { handler: 'JustLogHandler' as const }, glance('site-a'), 'log'],
  ])('%s', (_name, options, site, target) => {
    expect(registrationTarget(options, site)).toBe(target);
  });

  test('the same image into two clouds is two registrations', () => {
    const e = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA });
    expect(registerWorkflowId(e, 'synnefo-a')).not.toBe(registerWorkflowId(e, 'synnefo-b'));
    expect(imageRevisionWorkflowId(e, 'register', 'synnefo-a')).not.toBe(
      imageRevisionWorkflowId(e, 'register', 'synnefo-b'),
    );
  });

  test('a Synnefo and a Glance cloud of the same name, or two Glance clouds, are different registrations', () => {
    const e = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA });
    const ids = [synnefo('site-a'), glance('site-a'), glance('site-b')].map((site) =>
      imageRevisionWorkflowId(e, 'register', registrationTarget({}, site)),
    );
    expect(new Set(ids).size).toBe(3);
    expect(ids[1]).toBe(`image:glance-site-a:list-1:img-1:sha512-${'ab'.repeat(16)}`);
  });
});

describe('expireWorkflowId and the revision workflow', () => {
  test('uses the revision when the checksum is known, else the expired file name vmcatcher gives', () => {
    expect(expireWorkflowId(event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA }), T)).toBe(
      `expire:${T}:list-1:img-1:sha512-${'ab'.repeat(16)}`,
    );
    expect(expireWorkflowId(event({ ...base, VMCATCHER_EVENT_FILENAME: 'img-1.2026-11-26_12-00-00' }), T)).toBe(
      `expire:${T}:list-1:img-1:f-img-1.2026-11-26_12-00-00`,
    );
  });

  test('an Available and an Expire of the same revision reach the same revision workflow', () => {
    const e = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA });
    expect(imageRevisionWorkflowId(e, 'register', T)).toBe(imageRevisionWorkflowId(e, 'expire', T));
    expect(imageRevisionWorkflowId(e, 'register', T)).toBe(`image:${T}:list-1:img-1:sha512-${'ab'.repeat(16)}`);
    expect(childWorkflowId(e, 'register', T)).toBe(registerWorkflowId(e, T));
    expect(childWorkflowId(e, 'expire', T)).toBe(expireWorkflowId(e, T));
  });
});

describe('imageIdentity', () => {
  test('is what the registered image carries as properties and what the workflow id is made of', () => {
    const e = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA });
    const { imageListId, imageId, revision } = imageIdentity(e);
    expect(registerWorkflowId(e, T)).toBe(`register:${T}:${imageListId}:${imageId}:${revision}`);
  });
});
