import { readFileSync } from 'node:fs';
import path from 'node:path';
import { eventToFlat } from '../../core/event.js';
import { openEnvelope } from '../../image-lists/envelope.js';
import { imageToEvent, parseImageList } from '../../image-lists/parse.js';
import { SHARED } from '../support/cli.js';

/**
 * The real image lists of the shared folder beside the checkout (shared/imagelists), opened and
 * parsed as every command does. In the services project: a fresh clone has no shared folder, and
 * `npm run test:unit` needs nothing beside the checkout.
 */
const LISTS = path.join(SHARED, 'imagelists');
const now = new Date('2026-01-01T00:00:00Z');

describe('the real image lists of shared/imagelists', () => {
  test('the real cloudkeeper fixtures open', () => {
    for (const f of ['cloudkeeper-imagelist01.signed', 'cloudkeeper-imagelist_invalid.signed']) {
      const envelope = openEnvelope(readFileSync(path.join(LISTS, f)));
      expect(envelope).toMatchObject({ kind: 'smime', micalg: 'sha-256' });
      expect(parseImageList(envelope.json).list.images).toHaveLength(2);
    }
  });

  test('every AppDB key of the cloudkeeper list is read', () => {
    const { list: parsed } = parseImageList(
      openEnvelope(readFileSync(path.join(LISTS, 'cloudkeeper-imagelist01.signed'))).json,
      now,
    );
    expect(parsed).toMatchObject({
      identifier: '76fdee70-8119-5d33-aaaa-3c57e1c60df1',
      vo: 'some1.vo.net',
      version: '20150618211400',
      endorser: {
        creator: 'Applications Database',
        ca: '/DC=XXX/DC=YYY/CN=SOME TEST CA',
        email: 'dontwriteme@please.net',
      },
      expired: false,
    });
    expect(parsed.images[0]).toMatchObject({
      format: 'OVA',
      group: 'General group',
      ramMinimum: 512,
      ramRecommended: 1024,
      coreMinimum: 1,
      coreRecommended: 4,
      osName: 'Scientific Linux',
      expires: '2499-12-31T22:00:00Z',
      expired: false,
      user: { fullname: 'Bruce Wayne' },
    });
    expect(parsed.images[0].comments).toBeUndefined(); // "" counts as absent
  });

  test('an image becomes the original flat message, plus VO and sha512, without an event type', () => {
    const { list: parsed } = parseImageList(
      readFileSync(path.join(LISTS, 'hepixvmitrust-imagelist.json'), 'utf8'),
      now,
    );
    expect(eventToFlat(imageToEvent(parsed, parsed.images[0]))).toEqual({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: '4e186b44-2c64-40ea-97d5-e9e5c0bce059',
      VMCATCHER_EVENT_DC_IDENTIFIER: '488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d',
      VMCATCHER_EVENT_DC_TITLE: 'README example VM',
      VMCATCHER_EVENT_DC_DESCRIPTION: 'This is an README example VM',
      VMCATCHER_EVENT_HV_URI: 'http://example.org/example-image.img',
      VMCATCHER_EVENT_HV_SIZE: '2147483648',
      VMCATCHER_EVENT_HV_VERSION: '1',
      VMCATCHER_EVENT_HV_HYPERVISOR: 'kvm',
      VMCATCHER_EVENT_SL_ARCH: 'x86_64',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: parsed.images[0].checksumSha512,
      VMCATCHER_EVENT_SL_COMMENTS: 'Vanila install with contextulization scripts',
      VMCATCHER_EVENT_SL_OS: 'Linux',
      VMCATCHER_EVENT_SL_OSVERSION: 'SL 5.5',
    });
  });
});
