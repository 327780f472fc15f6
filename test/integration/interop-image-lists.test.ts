import { mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseConfig } from '../../core/config.js';
import { SignatureError } from '../../core/errors.js';
import { readImageList } from '../../image-lists/read.js';
import { createLogger } from '../../core/logging.js';
import { SHARED } from '../support/cli.js';

/**
 * The real image lists of /work/shared/interop/imagelists (README §1 "Expected behaviour"),
 * read exactly as the commands read them (real openssl, real files), under each policy.
 */

const LISTS = path.join(SHARED, 'interop', 'imagelists');
const CA_2018 = path.join(LISTS, 'cloudkeeper-ca-9da13359.0');
const CA_2016 = path.join(LISTS, 'cloudkeeper-ca-457f896a.0');
/** The self-signed cert that signs the current cloudkeeper lists (it is its own CA). */
const CK_SIGNER = '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd';
const CK_AUTHORISED = [{ dn: CK_SIGNER, ca: CK_SIGNER }];
const CK_IMAGES = ['c0482bc2-bf41-5d49-aaaa-a750174a186b', '662b0e71-3e21-bbbb-b6a1-cc2f51319fa7'];
const CK04_IMAGES = ['c0482bc2-bf41-5d49-gggg-a750174a186b', '662b0e71-3e21-hhhh-b6a1-cc2f51319fa7'];
const HEPIX_IMAGES = ['488dcdc4-9ab1-4fc8-a7ba-b7a5428ecb3d'];
const NOW = new Date('2026-06-01T00:00:00Z');

let caDir: string;

beforeAll(async () => {
  // The same CAs as a hashed folder, as /etc/grid-security/certificates is laid out.
  caDir = await mkdtemp(path.join(os.tmpdir(), 'snf-interop-ca-'));
  await symlink(CA_2018, path.join(caDir, '9da13359.0'));
  await symlink(CA_2016, path.join(caDir, '457f896a.0'));
});

afterAll(async () => {
  await rm(caDir, { recursive: true, force: true });
});

interface Row {
  name: string;
  file: string;
  security: Record<string, unknown>;
  /** A refusal matching this, or the accepted status and images. */
  refused?: RegExp;
  status?: string;
  images?: string[];
  warning?: RegExp;
  invalid?: Array<{ identifier: string; problem: RegExp }>;
}

const require_ = { signaturePolicy: 'require' };
const ROWS: Row[] = [
  // Current cloudkeeper lists: the signature verifies against their CA; their signer is not their declared endorser.
  {
    name: 'imagelist01, pinned',
    file: 'cloudkeeper-imagelist01.signed',
    security: { ...require_, caPath: CA_2018, endorsers: CK_AUTHORISED },
    refused:
      /signer \/C=AU\/ST=Some-State\/O=Internet Widgits Pty Ltd is not the declared endorser \/DC=XXX\/DC=YYY\/C=ZZZ\/O=Hosts\/O=AA.net\/CN=some.unknown.source/,
  },
  {
    name: 'imagelist04, pinned',
    file: 'cloudkeeper-imagelist04.signed',
    security: { ...require_, caPath: CA_2018, endorsers: CK_AUTHORISED },
    refused: /is not the declared endorser/,
  },
  {
    name: 'imagelist01, not pinned, signer authorised',
    file: 'cloudkeeper-imagelist01.signed',
    security: { ...require_, caPath: CA_2018, pinEndorser: false, endorsers: CK_AUTHORISED },
    status: 'verified',
    images: CK_IMAGES,
  },
  {
    name: 'imagelist01, hashed CA folder',
    file: 'cloudkeeper-imagelist01.signed',
    security: { ...require_, caPath: '<caDir>', pinEndorser: false, endorsers: CK_AUTHORISED },
    status: 'verified',
    images: CK_IMAGES,
  },
  {
    name: 'imagelist04 (non-hex "UUIDs"), not pinned, authorised',
    file: 'cloudkeeper-imagelist04.signed',
    security: { ...require_, caPath: CA_2018, pinEndorser: false, endorsers: CK_AUTHORISED },
    status: 'verified',
    images: CK04_IMAGES,
  },
  {
    name: 'imagelist01, authorised in RFC 2253 spelling',
    file: 'cloudkeeper-imagelist01.signed',
    security: {
      ...require_,
      caPath: CA_2018,
      pinEndorser: false,
      endorsers: [
        { dn: 'O=Internet Widgits Pty Ltd,ST=Some-State,C=AU', ca: 'O=Internet Widgits Pty Ltd, ST=Some-State, C=AU' },
      ],
    },
    status: 'verified',
    images: CK_IMAGES,
  },
  // The endorser authorisation: a valid signature alone is not enough.
  {
    name: 'imagelist01, no endorser authorised',
    file: 'cloudkeeper-imagelist01.signed',
    security: { ...require_, caPath: CA_2018, pinEndorser: false },
    refused: /no endorser is authorised for .*: set security\.endorsers/,
  },
  {
    name: 'imagelist01, another endorser authorised',
    file: 'cloudkeeper-imagelist01.signed',
    security: {
      ...require_,
      caPath: CA_2018,
      pinEndorser: false,
      endorsers: [
        { dn: '/DC=XXX/DC=YYY/C=ZZZ/O=Hosts/O=AA.net/CN=some.unknown.source', ca: '/DC=XXX/DC=YYY/CN=SOME TEST CA' },
      ],
    },
    refused: /is not an authorised endorser of this list \(security\.endorsers: /,
  },
  {
    name: 'imagelist01, no endorser authorised, endorserPolicy warn',
    file: 'cloudkeeper-imagelist01.signed',
    security: { ...require_, caPath: CA_2018, pinEndorser: false, endorserPolicy: 'warn' },
    status: 'unauthorised-endorser',
    images: CK_IMAGES,
    warning: /accepted although no endorser is authorised .*security\.endorserPolicy = warn/,
  },
  // Other signers, expired signers, CAs that are not here.
  {
    name: 'imagelist_invalid (another self-signed signer, altered content)',
    file: 'cloudkeeper-imagelist_invalid.signed',
    security: { ...require_, caPath: CA_2018, endorsers: CK_AUTHORISED },
    refused:
      /signature verification failed: self-signed certificate; the content does not match the signature either \(security\.signaturePolicy = require\)/,
  },
  {
    name: 'imagelist_invalid, hashed CA folder',
    file: 'cloudkeeper-imagelist_invalid.signed',
    security: { ...require_, caPath: '<caDir>', endorsers: CK_AUTHORISED },
    refused: /signature verification failed: certificate has expired; the content does not match the signature either/,
  },
  {
    name: '2016 list, signer expired 2021',
    file: 'cloudkeeper-imagelist01-2016.signed',
    security: {
      ...require_,
      caPath: CA_2016,
      pinEndorser: false,
      endorsers: [
        { dn: '/C=NA/ST=Narnia/L=Aver/O=TEST/OU=TEST/CN=TEST', ca: '/C=NA/ST=Narnia/L=Aver/O=TEST/OU=TEST/CN=TEST' },
      ],
    },
    refused: /signature verification failed: certificate has expired/,
  },
  {
    name: '2016 list under warn',
    file: 'cloudkeeper-imagelist01-2016.signed',
    security: { signaturePolicy: 'warn', caPath: CA_2016 },
    status: 'invalid',
    images: CK_IMAGES,
    warning: /accepted although signature verification failed: certificate has expired/,
  },
  {
    name: 'hepixvmitrust README list: intact signature, GridKa CA not here',
    file: 'hepixvmitrust-readme-signed.smime',
    security: { ...require_, caPath: '<caDir>' },
    refused:
      /signature verification failed: unable to get local issuer certificate \(signer \/C=DE\/O=GermanGrid\/OU=DESY\/CN=Owen Synge, CA \/C=DE\/O=GermanGrid\/CN=GridKa-CA\)/,
  },
  {
    name: 'hepixvmitrust README list under accept',
    file: 'hepixvmitrust-readme-signed.smime',
    security: { signaturePolicy: 'accept', caPath: '<caDir>' },
    status: 'invalid',
    images: HEPIX_IMAGES,
  },
  // Unsigned lists: refused under require, parsed under accept.
  ...[
    'hepixvmitrust-imagelist.json',
    'cloudkeeper-imagelist01.unsigned',
    'cloudkeeper-image_list10.json',
    'snf-vmcatcher-ImageListConfigTest.json',
  ].map((file): Row => ({
    name: `${file}, require`,
    file,
    security: { ...require_, caPath: CA_2018, endorsers: CK_AUTHORISED },
    refused: /image list refused: the list is not signed \(security\.signaturePolicy = require\)/,
  })),
  {
    name: 'hepixvmitrust list (CRLF, numbers as numbers) under accept',
    file: 'hepixvmitrust-imagelist.json',
    security: { signaturePolicy: 'accept', caPath: CA_2018 },
    status: 'unsigned',
    images: HEPIX_IMAGES,
  },
  {
    name: 'cloudkeeper unsigned under accept',
    file: 'cloudkeeper-imagelist01.unsigned',
    security: { signaturePolicy: 'accept', caPath: CA_2018 },
    status: 'unsigned',
    images: CK_IMAGES,
  },
  {
    name: 'cloudkeeper image_list10 (newer AppDB keys) under accept',
    file: 'cloudkeeper-image_list10.json',
    security: { signaturePolicy: 'accept', caPath: CA_2018 },
    status: 'unsigned',
    images: CK_IMAGES,
  },
  {
    name: 'snf-vmcatcher test list under accept: its CHECKSUM placeholder is an invalid image',
    file: 'snf-vmcatcher-ImageListConfigTest.json',
    security: { signaturePolicy: 'accept', caPath: CA_2018 },
    status: 'unsigned',
    images: [],
    invalid: [{ identifier: 'FOOBAR_', problem: /sl:checksum:sha512 must be 128 hexadecimal digits/ }],
  },
];

describe('the real image lists parse or are refused as their signatures and the policy say', () => {
  test.each(ROWS.map((row) => [row.name, row] as const))('%s', async (_name, row) => {
    const lines: string[] = [];
    const logger = createLogger('interop', {
      destination: new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }),
    });
    const security = {
      allowedFileFolders: [LISTS],
      ...row.security,
      caPath: row.security.caPath === '<caDir>' ? caDir : row.security.caPath,
    };
    const config = parseConfig({ security }, 'test');
    const read = readImageList({ url: `file://${path.join(LISTS, row.file)}`, config, logger, now: NOW });
    if (row.refused) {
      await expect(read).rejects.toThrow(SignatureError);
      await expect(read).rejects.toThrow(row.refused);
      return;
    }
    const list = await read;
    expect(list.signature.status).toBe(row.status);
    expect(list.list.images.map((i) => i.identifier)).toEqual(row.images);
    if (row.warning) expect(list.signature.warning).toMatch(row.warning);
    else expect(list.signature.warning).toBeUndefined();
    expect(list.invalid).toEqual(
      (row.invalid ?? []).map((i) =>
        expect.objectContaining({ identifier: i.identifier, problem: expect.stringMatching(i.problem) }),
      ),
    );
  });
});
