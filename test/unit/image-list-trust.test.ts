import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseConfig } from '../../core/config.js';
import { ConfigError, InvalidInputError } from '../../core/errors.js';
import { describeOpensslFailure } from '../../image-lists/signature.js';
import {
  authorisedEndorsers,
  endorserNotAuthorised,
  findSubscription,
  resolveListToken,
  TOKEN_ENV,
} from '../../image-lists/subscription.js';

const CA = '/DC=org/DC=example/CN=Example CA';
const APPDB = { dn: '/DC=EU/DC=EGI/C=NL/O=Hosts/O=EGI.eu/CN=appdb.egi.eu', ca: CA };
const OTHER = { dn: '/DC=org/DC=example/CN=other', ca: CA };
const LIST = 'https://vmcaster.appdb.egi.eu/store/vo/fedcloud.egi.eu/image.list';

describe('configuration: subscriptions and authorised endorsers', () => {
  test('an original configuration still loads: no subscriptions, no endorsers, endorserPolicy follows signaturePolicy', () => {
    const config = parseConfig({ security: { signaturePolicy: 'require', pinEndorser: true } }, 'test');
    expect(config.subscriptions).toEqual([]);
    expect(config.security).toMatchObject({ endorsers: [], crlCheck: 'auto' });
    expect(config.security.endorserPolicy).toBeUndefined();
  });

  test('the #12 shape is accepted: url, credential, endorser or endorsers, every, vo, cloud, images', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-subs-'));
    const file = path.join(dir, 'application.conf');
    await writeFile(
      file,
      `security { credentials { appdb = { env = "APPDB_TOKEN" } }, endorsers = [ { dn = "${OTHER.dn}", ca = "${CA}" } ] }
subscriptions = [
  { url = "${LIST}", credential = appdb, endorser { dn = "${APPDB.dn}", ca = "${CA}" }, every = 6h, vo = fedcloud.egi.eu, cloud = okeanos, images = [ "a", "b" ] }
  { url = "https://cernvm.cern.ch/releases/image.list", endorsers = [ { dn = "CN=cernvm,O=CERN", ca = "CN=CERN CA,DC=cern,DC=ch" } ], every = "30 minutes" }
]`,
    );
    try {
      const { config } = await loadConfig({ file, env: {} });
      expect(config.subscriptions[0]).toMatchObject({
        url: LIST,
        credential: 'appdb',
        endorser: APPDB,
        every: 6 * 3_600_000,
        vo: 'fedcloud.egi.eu',
        images: ['a', 'b'],
      });
      expect(config.subscriptions[1].every).toBe(30 * 60_000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  const invalid: Array<[string, Record<string, unknown>, string, RegExp]> = [
    [
      'a credential that is not defined',
      { subscriptions: [{ url: LIST, credential: 'appdb' }] },
      'subscriptions.0.credential',
      /credential 'appdb' is not defined in security.credentials/,
    ],
    [
      'a token written into the URL',
      { subscriptions: [{ url: `https://TOKEN:x-oauth-basic@vmcaster.appdb.egi.eu/x` }] },
      'subscriptions.0.url',
      /carries credentials/,
    ],
    ['an ftp URL', { subscriptions: [{ url: 'ftp://h/x' }] }, 'subscriptions.0.url', /scheme ftp: is not supported/],
    [
      'the same list twice',
      { subscriptions: [{ url: LIST }, { url: `${LIST}#again` }] },
      'subscriptions.1.url',
      /the same list as subscriptions.0/,
    ],
    [
      'one list id for two subscriptions',
      {
        subscriptions: [
          { url: LIST, listId: 'x' },
          { url: 'https://h/other.list', listId: 'x' },
        ],
      },
      'subscriptions.1.listId',
      /list id 'x' is already subscriptions.0's/,
    ],
    [
      "a registry project's id as a list's listId",
      {
        subscriptions: [
          { registry: 'https://registry.egi.eu', project: 'egi_vm_images' },
          { url: LIST, listId: 'registry.egi.eu/egi_vm_images' },
        ],
      },
      'subscriptions.1.listId',
      /list id 'registry.egi.eu\/egi_vm_images' is already subscriptions.0's/,
    ],
    [
      'a maxExpireFraction above 1',
      { subscriptions: [{ url: LIST, maxExpireFraction: 2 }] },
      'subscriptions.0.maxExpireFraction',
      /1/,
    ],
    [
      'an endorser without its CA',
      { subscriptions: [{ url: LIST, endorser: { dn: APPDB.dn } }] },
      'subscriptions.0.endorser.ca',
      /expected string/,
    ],
    [
      'a DN that is not a DN',
      { security: { endorsers: [{ dn: 'appdb', ca: CA }] } },
      'security.endorsers.0.dn',
      /expected a DN/,
    ],
    [
      'a bad duration',
      { subscriptions: [{ url: LIST, every: 'often' }] },
      'subscriptions.0.every',
      /'often' is not a duration/,
    ],
    ['an unknown endorserPolicy', { security: { endorserPolicy: 'maybe' } }, 'security.endorserPolicy', /./],
    [
      'an unknown subscription key',
      { subscriptions: [{ url: LIST, endorser_dn: 'x' }] },
      'subscriptions.0',
      /endorser_dn/,
    ],
  ];
  test.each(invalid)('refuses %s, naming the key', (_name, raw, key, message) => {
    const error = (() => {
      try {
        parseConfig(raw, 'test.conf');
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe(key);
    expect((error as ConfigError).message).toMatch(message);
  });
});

describe('which endorsers may sign a list', () => {
  const config = parseConfig(
    {
      security: { endorsers: [OTHER] },
      subscriptions: [{ url: LIST, endorser: APPDB }, { url: 'https://h/none.list' }],
    },
    'test',
  );
  const signer = (e: { dn: string; ca: string }) => ({ subject: e.dn, issuer: e.ca });

  test("a subscription's endorsers replace security.endorsers for its list; URLs match without userinfo or fragment", () => {
    expect(
      findSubscription(config, `https://tok:x-oauth-basic@vmcaster.appdb.egi.eu/store/vo/fedcloud.egi.eu/image.list#x`)
        ?.index,
    ).toBe(0);
    expect(authorisedEndorsers(config, LIST)).toEqual({ endorsers: [APPDB], key: 'subscriptions.0.endorser' });
    expect(authorisedEndorsers(config, 'https://h/none.list')).toEqual({
      endorsers: [OTHER],
      key: 'security.endorsers',
    });
    expect(authorisedEndorsers(config, 'https://elsewhere/x.list').key).toBe('security.endorsers');
  });

  test('DN and CA must both match, in either spelling', () => {
    const authorised = authorisedEndorsers(config, LIST);
    expect(endorserNotAuthorised(signer(APPDB), authorised, LIST)).toBeUndefined();
    expect(
      endorserNotAuthorised(
        { subject: 'CN=appdb.egi.eu,O=EGI.eu,O=Hosts,C=NL,DC=EGI,DC=EU', issuer: 'CN=Example CA, DC=example, DC=org' },
        authorised,
        LIST,
      ),
    ).toBeUndefined();
    expect(endorserNotAuthorised({ subject: APPDB.dn, issuer: '/CN=Another CA' }, authorised, LIST)).toMatch(
      /signer .* \(CA \/CN=Another CA\) is not an authorised endorser of this list \(subscriptions.0.endorser: /,
    );
    expect(endorserNotAuthorised(signer(OTHER), authorised, LIST)).toMatch(/is not an authorised endorser/);
  });

  test('with nobody authorised, the refusal says which key to set', () => {
    const none = parseConfig({}, 'test');
    expect(endorserNotAuthorised(signer(APPDB), authorisedEndorsers(none, LIST), LIST)).toMatch(
      /^no endorser is authorised for .*: set security\.endorsers = \[\{ dn = "\/DC=EU/,
    );
  });
});

describe('where the list token comes from', () => {
  let dir: string;
  let tokenFile: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-token-'));
    tokenFile = path.join(dir, 'token');
    await writeFile(tokenFile, 'from-file-token\n');
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const config = () =>
    parseConfig(
      {
        security: { credentials: { appdb: 'from-credential', sub: 'from-subscription' } },
        subscriptions: [{ url: LIST, credential: 'sub' }],
      },
      'test',
    );

  test('command line first, then the URL, then the environment, then the subscription', async () => {
    const env = { [TOKEN_ENV]: 'from-env-token' };
    expect(await resolveListToken(config(), LIST, { token: ' from-option ', urlToken: 'u', env })).toEqual({
      token: 'from-option',
      source: '--token',
    });
    expect((await resolveListToken(config(), LIST, { tokenFile, urlToken: 'u', env })).token).toBe('from-file-token');
    expect((await resolveListToken(config(), LIST, { credential: 'appdb', env })).token).toBe('from-credential');
    expect((await resolveListToken(config(), LIST, { urlToken: 'from-url', env })).token).toBe('from-url');
    expect((await resolveListToken(config(), LIST, { env })).token).toBe('from-env-token');
    expect(await resolveListToken(config(), LIST, { env: {} })).toEqual({
      token: 'from-subscription',
      source: 'credential sub (subscriptions.0.credential)',
    });
    expect(await resolveListToken(config(), 'https://other/list', { env: {} })).toEqual({});
  });

  test('bad token sources are clear errors', async () => {
    await expect(resolveListToken(config(), LIST, { token: 't', credential: 'appdb' })).rejects.toThrow(
      new InvalidInputError('give only one of --token, --credential'),
    );
    await expect(resolveListToken(config(), LIST, { token: '  ' })).rejects.toThrow('--token is empty');
    await expect(resolveListToken(config(), LIST, { credential: 'nope' })).rejects.toThrow(
      "credential 'nope' is not defined",
    );
    const twoLines = path.join(dir, 'two');
    await writeFile(twoLines, 'a\nb\n');
    await expect(resolveListToken(config(), LIST, { tokenFile: twoLines })).rejects.toThrow('expected one token');
  });
});

describe('CRL failures say what to do', () => {
  const stderr = (error: string) =>
    `Verification failure\n40:error:10800075:PKCS7 routines:PKCS7_verify:certificate verify error:x.c:291:Verify error: ${error}\n`;
  test.each([
    ['certificate revoked', /has been revoked \(CRL in security.caPath\)/],
    [
      'unable to get certificate CRL',
      /no CRL for a CA in the signer's chain.*run fetch-crl, or set security.crlCheck = off/,
    ],
    ['CRL has expired', /a CRL in security.caPath has expired \(run fetch-crl\)/],
  ])('%s', (error, message) => {
    expect(describeOpensslFailure(stderr(error), 4, true)).toMatch(message);
    expect(describeOpensslFailure(stderr('self-signed certificate'), 4, true)).toBe(
      'signature verification failed: self-signed certificate',
    );
  });
});
