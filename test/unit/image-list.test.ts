import { pathToFileURL } from 'node:url';
import { openEnvelope, parseContentType } from '../../image-lists/envelope.js';
import { parseImageListUrl } from '../../image-lists/fetch.js';
import { isInsideFolders } from '../../core/paths.js';
import { parseImageList, parseListDate } from '../../image-lists/parse.js';
import {
  applySignaturePolicy,
  describeOpensslFailure,
  endorserMismatch,
  normaliseDn,
} from '../../image-lists/signature.js';
import { decideRedirect, describeFetchFailure } from '../../core/http.js';
import { SignatureError } from '../../core/errors.js';

const SHA = 'c'.repeat(128);
const json = JSON.stringify({ 'hv:imagelist': { 'dc:identifier': 'L', 'hv:images': [] } });

describe('openEnvelope: plain JSON and S/MIME multipart/signed', () => {
  const smime = (headers: string, eol: string) =>
    [
      ...headers.split('\n'),
      '',
      'This is an S/MIME signed message',
      '',
      '--B1',
      json,
      '',
      '--B1',
      'Content-Type: application/x-pkcs7-signature',
      '',
      'AAAA',
      '--B1--',
      '',
    ].join(eol);
  const cases: Array<[string, string]> = [
    [
      'boundary last, LF',
      smime(
        'MIME-Version: 1.0\nContent-Type: multipart/signed; protocol="application/x-pkcs7-signature"; micalg="sha-256"; boundary="B1"',
        '\n',
      ),
    ],
    [
      'boundary last, CRLF',
      smime(
        'MIME-Version: 1.0\nContent-Type: multipart/signed; protocol="application/x-pkcs7-signature"; micalg="sha-256"; boundary="B1"',
        '\r\n',
      ),
    ],
    [
      'boundary first and unquoted',
      smime(
        'MIME-Version: 1.0\nContent-Type: multipart/signed; boundary=B1; protocol="application/x-pkcs7-signature"',
        '\n',
      ),
    ],
    [
      'folded Content-Type header with the boundary on the next line',
      smime(
        'MIME-Version: 1.0\nContent-Type: multipart/signed;\n\tprotocol="application/x-pkcs7-signature";\n boundary="B1"',
        '\r\n',
      ),
    ],
    [
      'Content-Type before MIME-Version',
      smime('Content-Type: multipart/signed; boundary="B1"\nMIME-Version: 1.0', '\n'),
    ],
  ];
  test.each(cases)('%s', (_name, text) => {
    const envelope = openEnvelope(text);
    expect(envelope.kind).toBe('smime');
    expect(JSON.parse(envelope.json)).toEqual(JSON.parse(json));
  });

  test('a first part with its own headers yields only the content', () => {
    const text = [
      'Content-Type: multipart/signed; boundary="X"',
      '',
      '--X',
      'Content-Type: application/json',
      '',
      json,
      '--X',
      '',
      'sig',
      '--X--',
    ].join('\n');
    expect(JSON.parse(openEnvelope(text).json)).toEqual(JSON.parse(json));
  });

  test('plain JSON, with or without a BOM', () => {
    expect(openEnvelope(json)).toEqual({ kind: 'plain', json });
    expect(openEnvelope(`\ufeff${json}`).kind).toBe('plain');
  });

  const broken: Array<[string, string, RegExp]> = [
    ['not JSON, not MIME', 'hello', /neither JSON nor an S\/MIME/],
    ['no boundary', 'Content-Type: multipart/signed\n\nx', /without a boundary/],
    ['opaque S/MIME', 'Content-Type: application/pkcs7-mime\n\nx', /unsupported MIME type application\/pkcs7-mime/],
    ['no closing boundary', 'Content-Type: multipart/signed; boundary=Q\n\n--Q\n{}\n--Q\nsig\n', /closing boundary/],
  ];
  test.each(broken)('refuses %s', (_n, text, message) => {
    expect(() => openEnvelope(text)).toThrow(message);
  });

  test('parseContentType keeps quoted semicolons', () => {
    expect(parseContentType('multipart/signed; boundary="a;b"; micalg=sha1').params).toEqual({
      boundary: 'a;b',
      micalg: 'sha1',
    });
  });
});

describe('DNs: every form openssl or a list may print compares equal', () => {
  const cases: Array<[string, string]> = [
    ['/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd', '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd'],
    ['subject=/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd', '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd'],
    ['C = AU, ST = Some-State, O = Internet Widgits Pty Ltd', '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd'],
    ['O=Internet Widgits Pty Ltd,ST=Some-State,C=AU', '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd'],
    ['/DC=EU/DC=EGI/C=NL/O=Hosts/O=EGI.eu/CN=appdb.egi.eu', '/DC=EU/DC=EGI/C=NL/O=Hosts/O=EGI.eu/CN=appdb.egi.eu'],
    [
      '/C=DE/O=GermanGrid/CN=Owen Synge/Email=owen@desy.de',
      '/C=DE/O=GermanGrid/CN=Owen Synge/emailAddress=owen@desy.de',
    ],
    ['/C=DE/CN=a\\/b', '/C=DE/CN=a/b'],
    ['CN=x\\, y,O=Org', '/O=Org/CN=x, y'],
  ];
  test.each(cases)('%s', (input, expected) => {
    expect(normaliseDn(input)).toBe(expected);
  });
});

describe('endorser pinning and the signature policy', () => {
  const signer = { subject: '/C=AU/O=X/CN=signer', issuer: '/C=AU/O=X/CN=CA' };
  test('a signer equal to the declared endorser passes; others are named', () => {
    expect(endorserMismatch(signer, { dn: 'C = AU, O = X, CN = signer', ca: '/C=AU/O=X/CN=CA' })).toBeUndefined();
    expect(endorserMismatch(signer, { dn: '/C=AU/O=X/CN=other', ca: '/C=AU/O=X/CN=CA' })).toMatch(
      /is not the declared endorser \/C=AU\/O=X\/CN=other/,
    );
    expect(endorserMismatch(signer, { dn: '/C=AU/O=X/CN=signer', ca: '/CN=other CA' })).toMatch(
      /issuer .* is not the declared CA/,
    );
    expect(endorserMismatch(signer, undefined)).toMatch(/declares no hv:endorser/);
  });

  type Policy = 'require' | 'warn' | 'accept';
  type Row = [string, Parameters<typeof applySignaturePolicy>[0], Policy, boolean, Policy | undefined, string];
  const wrong = { state: 'verified' as const, signer, endorserProblem: 'signer is not the declared endorser' };
  const unauthorised = {
    state: 'verified' as const,
    signer,
    authorisationProblem: 'signer is not an authorised endorser',
  };
  const both = { ...wrong, ...unauthorised };
  const cases: Row[] = [
    ['verified, require', { state: 'verified', signer }, 'require', true, undefined, 'verified'],
    [
      'unsigned, require',
      { state: 'unsigned' },
      'require',
      true,
      undefined,
      'refused by security.signaturePolicy = require',
    ],
    ['unsigned, warn', { state: 'unsigned' }, 'warn', true, undefined, 'unsigned+warning'],
    ['unsigned, accept', { state: 'unsigned' }, 'accept', true, undefined, 'unsigned'],
    [
      'invalid, require',
      { state: 'invalid', reason: 'bad' },
      'require',
      false,
      undefined,
      'refused by security.signaturePolicy = require',
    ],
    ['invalid, warn', { state: 'invalid', reason: 'bad' }, 'warn', false, undefined, 'invalid+warning'],
    [
      'wrong endorser, pinned, require',
      wrong,
      'require',
      true,
      undefined,
      'refused by security.signaturePolicy = require',
    ],
    ['wrong endorser, not pinned, require', wrong, 'require', false, undefined, 'verified'],
    ['wrong endorser, pinned, warn', wrong, 'warn', true, undefined, 'wrong-endorser+warning'],
    [
      'unauthorised, endorserPolicy unset follows require',
      unauthorised,
      'require',
      true,
      undefined,
      'refused by security.endorserPolicy unset, so security.signaturePolicy = require applies',
    ],
    [
      'unauthorised, endorserPolicy require under signature warn',
      unauthorised,
      'warn',
      true,
      'require',
      'refused by security.endorserPolicy = require',
    ],
    ['unauthorised, endorserPolicy warn', unauthorised, 'require', true, 'warn', 'unauthorised-endorser+warning'],
    ['unauthorised, endorserPolicy accept', unauthorised, 'require', true, 'accept', 'unauthorised-endorser'],
    [
      'wrong and unauthorised, endorserPolicy warn: pinning still refuses',
      both,
      'require',
      true,
      'warn',
      'refused by security.signaturePolicy = require',
    ],
    ['wrong and unauthorised, both warn', both, 'warn', true, 'warn', 'wrong-endorser+warning'],
  ];
  test.each(cases)('%s', (_n, outcome, signaturePolicy, pinEndorser, endorserPolicy, expected) => {
    const apply = () => applySignaturePolicy(outcome, { signaturePolicy, pinEndorser, endorserPolicy });
    if (expected.startsWith('refused by ')) {
      expect(apply).toThrow(SignatureError);
      expect(apply).toThrow(`(${expected.slice('refused by '.length)})`);
      return;
    }
    const status = apply();
    expect(`${status.status}${status.warning ? '+warning' : ''}`).toBe(expected);
  });

  test('openssl failures become one readable line', () => {
    expect(
      describeOpensslFailure(
        'Verification failure\n40A7:error:10800075:PKCS7 routines:PKCS7_verify:certificate verify error:../crypto/pkcs7/pk7_smime.c:291:Verify error: self-signed certificate\n',
        4,
      ),
    ).toBe('signature verification failed: self-signed certificate');
    expect(
      describeOpensslFailure(
        'Verification failure\n40:error:10800065:PKCS7 routines:PKCS7_signatureVerify:digest failure:../x.c:1:\n',
      ),
    ).toMatch(/content does not match/);
  });
});

describe('parseImageList', () => {
  const image = (over: Record<string, unknown> = {}) => ({
    'hv:image': {
      'dc:identifier': 'img-1',
      'hv:uri': 'https://h/img.ova',
      'hv:size': '10',
      'sl:checksum:sha512': SHA,
      ...over,
    },
  });
  const list = (over: Record<string, unknown> = {}, images: unknown[] = [image()]) => ({
    'hv:imagelist': {
      'dc:identifier': 'L1',
      'dc:date:created': '2015-06-18T21:14:00Z',
      'dc:date:expires': '2499-12-31T22:00:00Z',
      'ad:vo': 'vo.x',
      'hv:images': images,
      ...over,
    },
  });
  const now = new Date('2026-01-01T00:00:00Z');

  test('numbers written as strings or numbers are both accepted', () => {
    const a = parseImageList(list({}, [image({ 'hv:size': '121243136', 'hv:ram_minimum': '512' })]), now).list
      .images[0];
    const b = parseImageList(list({}, [image({ 'hv:size': 121243136, 'hv:ram_minimum': 512, 'hv:version': 3 })]), now)
      .list.images[0];
    expect([a.size, a.ramMinimum, b.size, b.ramMinimum, b.version]).toEqual([121243136, 512, 121243136, 512, '3']);
  });

  test('an invalid entry is reported with its identifier and problem; the valid ones remain', () => {
    const parsed = parseImageList(
      list({}, [
        image(),
        image({ 'dc:identifier': 'bad-1', 'sl:checksum:sha512': 'xyz' }),
        image({ 'dc:identifier': 'bad-2', 'hv:size': 'big' }),
        { nope: 1 },
        image({ 'dc:identifier': 'bad-3', 'hv:uri': undefined }),
      ]),
      now,
    );
    expect(parsed.list.images.map((i) => i.identifier)).toEqual(['img-1']);
    expect(parsed.invalid).toEqual([
      {
        index: 1,
        identifier: 'bad-1',
        problem: expect.stringContaining('sl:checksum:sha512 must be 128 hexadecimal digits'),
      },
      { index: 2, identifier: 'bad-2', problem: expect.stringContaining("hv:size 'big' is not a whole number") },
      { index: 3, problem: 'entry has no hv:image object' },
      { index: 4, identifier: 'bad-3', problem: expect.stringContaining('hv:uri') },
    ]);
  });

  test('expired and future-dated lists are flagged; dates must be %Y-%m-%dT%H:%M:%SZ', () => {
    expect(parseImageList(list({ 'dc:date:expires': '2020-01-01T00:00:00Z' }), now).list).toMatchObject({
      expired: true,
      createdInFuture: false,
    });
    expect(parseImageList(list({ 'dc:date:created': '2030-01-01T00:00:00Z' }), now).list).toMatchObject({
      expired: false,
      createdInFuture: true,
    });
    expect(() => parseImageList(list({ 'dc:date:expires': '2020-01-01 00:00:00' }), now)).toThrow(
      /dc:date:expires must be a date like/,
    );
    expect(parseListDate('2015-02-30T00:00:00Z')).toBeUndefined();
    expect(parseListDate('2015-02-28T23:59:59Z')?.toISOString()).toBe('2015-02-28T23:59:59.000Z');
  });

  test('a document without hv:imagelist or its identifier is refused', () => {
    expect(() => parseImageList('{}')).toThrow('image list has no hv:imagelist object');
    expect(() => parseImageList({ 'hv:imagelist': { 'hv:images': [] } })).toThrow(/dc:identifier/);
    expect(() => parseImageList('{')).toThrow(/not JSON/);
  });
});

describe('fetch policy', () => {
  const origin = new URL('https://lists.example/vo/image.list');
  const cases: Array<[string, URL, string | undefined, number, string]> = [
    ['same origin keeps the token', origin, '/other.list', 0, 'follow+credentials'],
    ['another host drops the token', origin, 'https://mirror.example/x', 0, 'follow'],
    ['another port drops the token', origin, 'https://lists.example:8443/x', 0, 'follow'],
    ['https → http is refused', origin, 'http://lists.example/x', 0, 'refuse'],
    [
      'http → https on the same host keeps the token',
      new URL('http://lists.example/x'),
      'https://lists.example/x',
      0,
      'follow+credentials',
    ],
    ['the hop limit', origin, '/x', 5, 'refuse'],
    ['no Location', origin, undefined, 0, 'refuse'],
    ['ftp', origin, 'ftp://lists.example/x', 0, 'refuse'],
  ];
  test.each(cases)('%s', (_n, from, location, hops, expected) => {
    const d = decideRedirect(from, location, from.protocol === 'http:' ? from : origin, hops, { maxRedirects: 5 });
    expect(d.follow ? `follow${d.keepCredentials ? '+credentials' : ''}` : 'refuse').toBe(expected);
  });

  test('a token in the URL userinfo is taken out of the URL', () => {
    const { url, token } = parseImageListUrl(
      'https://s3cr%40t:x-oauth-basic@vmcaster.appdb.egi.eu/store/vo/x/image.list',
    );
    expect(token).toBe('s3cr@t');
    expect(url.href).toBe('https://vmcaster.appdb.egi.eu/store/vo/x/image.list');
    expect(() => parseImageListUrl('ftp://x/y')).toThrow(/scheme ftp: is not supported/);
    expect(parseImageListUrl('file:lists/my%20list.json').url.href).toBe(
      `${pathToFileURL(process.cwd()).href}/lists/my%20list.json`,
    );
  });

  test('allowed folders are compared by path, not by prefix', () => {
    expect(isInsideFolders('/srv/lists/a.json', ['/srv/lists'])).toBe(true);
    expect(isInsideFolders('/srv/lists-evil/a.json', ['/srv/lists'])).toBe(false);
    expect(isInsideFolders('/etc/passwd', ['/srv/lists'])).toBe(false);
  });

  test('network failures say what happened', () => {
    const tls = Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(describeFetchFailure(tls, 'https://h/x')).toMatchObject({
      permanent: true,
      message: expect.stringContaining('TLS error fetching https://h/x: self-signed certificate'),
    });
    expect(describeFetchFailure(Object.assign(new Error('x'), { code: 'UND_ERR_HEADERS_TIMEOUT' })).message).toContain(
      'read timeout',
    );
    expect(describeFetchFailure(Object.assign(new Error('x'), { code: 'UND_ERR_CONNECT_TIMEOUT' })).message).toContain(
      'connect timeout',
    );
    expect(describeFetchFailure(Object.assign(new Error('x'), { cause: { code: 'ECONNREFUSED' } })).message).toContain(
      'connection refused',
    );
  });
});
