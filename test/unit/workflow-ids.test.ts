import { eventFromFlat } from '../../core/event.js';
import { expireWorkflowId, imageIdentity, registerWorkflowId, shortDigest } from '../../core/workflow-contract.js';

const SHA = 'ab'.repeat(64);
const event = (flat: Record<string, string>) => eventFromFlat(flat, 'message');
const base = { VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list-1', VMCATCHER_EVENT_DC_IDENTIFIER: 'img-1' };

describe('registerWorkflowId: one id per image revision', () => {
  test.each([
    ['the sha512 names the revision when known', { ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA, VMCATCHER_EVENT_HV_VERSION: '1.0' }, `register:list-1:img-1:sha512-${'ab'.repeat(16)}`],
    ['a checksum in upper case gives the same id', { ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA.toUpperCase() }, `register:list-1:img-1:sha512-${'ab'.repeat(16)}`],
    ['else the declared version', { ...base, VMCATCHER_EVENT_HV_VERSION: '3.3.0-1' }, 'register:list-1:img-1:v-3.3.0-1'],
    ['else a digest of the download URL', { ...base, VMCATCHER_EVENT_HV_URI: 'https://h/x.ova' }, `register:list-1:img-1:uri-${shortDigest('https://h/x.ova')}`],
    ['no list id: a fixed placeholder', { VMCATCHER_EVENT_DC_IDENTIFIER: 'img-1', VMCATCHER_EVENT_HV_VERSION: '2' }, 'register:no-list:img-1:v-2'],
    ['characters outside [A-Za-z0-9._-] are replaced', { ...base, VMCATCHER_EVENT_DC_IDENTIFIER: 'a b/c:d', VMCATCHER_EVENT_HV_VERSION: '1' }, 'register:list-1:a_b_c_d:v-1'],
  ])('%s', (_name, flat, id) => {
    expect(registerWorkflowId(event(flat))).toBe(id);
  });

  test('events differing only in fields outside the identity share the id; a new checksum does not', () => {
    const a = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA, VMCATCHER_EVENT_DC_TITLE: 'A', VMCATCHER_EVENT_TYPE: 'AvailablePostfix' });
    const b = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA, VMCATCHER_EVENT_DC_TITLE: 'B' });
    const c = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: 'cd'.repeat(64) });
    expect(registerWorkflowId(a)).toBe(registerWorkflowId(b));
    expect(registerWorkflowId(a)).not.toBe(registerWorkflowId(c));
  });

  test('ids stay within Temporal\'s limits for absurdly long identifiers', () => {
    const long = event({ VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'l'.repeat(500), VMCATCHER_EVENT_DC_IDENTIFIER: 'i'.repeat(500), VMCATCHER_EVENT_HV_VERSION: 'v'.repeat(500) });
    expect(registerWorkflowId(long).length).toBeLessThanOrEqual(255);
  });
});

describe('expireWorkflowId', () => {
  test('uses the revision when the checksum is known, else the expired file name vmcatcher gives', () => {
    expect(expireWorkflowId(event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA }))).toBe(`expire:list-1:img-1:sha512-${'ab'.repeat(16)}`);
    expect(expireWorkflowId(event({ ...base, VMCATCHER_EVENT_FILENAME: 'img-1.2026-11-26_12-00-00' }))).toBe('expire:list-1:img-1:f-img-1.2026-11-26_12-00-00');
  });
});

describe('imageIdentity', () => {
  test('is what the registered image carries as properties and what the workflow id is made of', () => {
    const e = event({ ...base, VMCATCHER_EVENT_SL_CHECKSUM_SHA512: SHA });
    const { imageListId, imageId, revision } = imageIdentity(e);
    expect(registerWorkflowId(e)).toBe(`register:${imageListId}:${imageId}:${revision}`);
  });
});
