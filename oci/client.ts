/**
 * A client for the read side of an OCI registry (the distribution API, and Harbor's API v2.0 to
 * list a project's repositories): anonymous, basic or Bearer-token access as the registry's
 * challenge asks, the project's redirect policy (credentials never follow a redirect to another
 * host), and errors that name the registry.
 *
 * The credential goes to the registry only, and only over TLS: every request stays on the
 * registry's origin (scheme, host and port); the token service is the registry's own origin or a
 * realm the configuration names (`tokenRealm`), over https; a 401 or 403 from another host (blob
 * storage a redirect reached) is that host's failure, never answered with the login. Plain http
 * carries a login or a token only to a registry on 127.0.0.1 and only with `plainHttpOnLoopback`
 * (tests).
 */
import type { Dispatcher } from 'undici';
import type { Config } from '../core/config.js';
import { resolveCredential } from '../core/credentials.js';
import { ConfigError, FetchError } from '../core/errors.js';
import { basicAuth, createDispatcher, httpGet, readBodyLimited, redact, type HttpResponse } from '../core/http.js';
import { parseChallenges, pullScope, tokenFromResponse, type Challenge } from './auth.js';

/** A registry login: Harbor robot accounts and htpasswd users alike. Never logged, never in workflow history. */
export interface RegistryLogin {
  username: string;
  password: string;
  /** The credential's name in security.credentials, for messages. */
  name: string;
}

/**
 * A registry credential is written `user:password` (a Harbor robot account: `robot$project+name:secret`);
 * the user name ends at the first colon.
 */
export async function resolveRegistryLogin(config: Config, name: string): Promise<RegistryLogin> {
  const secret = await resolveCredential(config, name);
  const colon = secret.indexOf(':');
  if (colon <= 0 || colon === secret.length - 1) {
    throw new ConfigError(`security.credentials.${name}: a registry credential is written "user:password"`, {
      key: `security.credentials.${name}`,
    });
  }
  return { username: secret.slice(0, colon), password: secret.slice(colon + 1), name };
}

type RegistrySecurity = Pick<Config['security'], 'connectTimeoutMs' | 'readTimeoutMs' | 'maxRedirects'>;

interface RegistryClientOptions extends RegistryAccess {
  /** The registry's base URL (`https://registry.egi.eu`). */
  registry: URL;
  login?: RegistryLogin;
  security: RegistrySecurity;
  insecureTls?: boolean;
}

/** What the site's configuration says about talking to one registry (its subscriptions' keys). */
interface RegistryAccess {
  /** Token services besides the registry's own origin that may receive the login (`tokenRealm`). */
  tokenRealms?: string[];
  /** Tests only: plain http may carry the login and tokens, to 127.0.0.1 (or ::1) and nowhere else. */
  plainHttpOnLoopback?: boolean;
}

/**
 * The site's settings for a registry, from the registry subscriptions of the configuration that
 * name its origin: every `tokenRealm` they give, and `plainHttpOnLoopback` if one sets it.
 */
export function registryAccess(config: Pick<Config, 'registrySubscriptions'>, registry: URL): RegistryAccess {
  const subs = config.registrySubscriptions.filter((sub) => new URL(sub.registry).origin === registry.origin);
  return {
    tokenRealms: subs.flatMap((sub) => (sub.tokenRealm ? [sub.tokenRealm] : [])),
    plainHttpOnLoopback: subs.some((sub) => sub.plainHttpOnLoopback === true),
  };
}

const LOOPBACK = new Set(['127.0.0.1', '[::1]']);

/** Where a login, a token or a token request may travel: https, or http to loopback when the site allows it. */
function secureChannel(url: URL, plainHttpOnLoopback: boolean | undefined): boolean {
  return url.protocol === 'https:' || (plainHttpOnLoopback === true && LOOPBACK.has(url.hostname));
}

interface RegistryGet {
  accept?: readonly string[];
  /** The token scope the request needs (`repository:<name>:pull`); the registry's challenge names it too. */
  scope?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** The limit on JSON answers (manifests, tag lists, catalogs): the distribution spec caps manifests at 4 MiB. */
export const MAX_REGISTRY_JSON_BYTES = 4 * 1024 * 1024;

/**
 * What a client asked of the registry: every request it sent (a 401 met with a login and asked
 * again counts twice; the redirects one request follows count as that one), how many of them
 * were conditional (`If-None-Match`) and how many of those were answered 304 Not Modified, and
 * the requests to the token service apart.
 */
export interface RegistryRequestCounts {
  total: number;
  conditional: number;
  notModified: number;
  tokens: number;
}

export class RegistryClient {
  readonly registry: URL;
  private readonly dispatcher: Dispatcher;
  /** Authorization header per token scope (`''`: the registry asked for Basic, any scope). */
  private readonly authorizations = new Map<string, { header: string; until: number }>();
  /** What this client has asked of the registry so far (a sync's summary reports it). */
  readonly requests: RegistryRequestCounts = { total: 0, conditional: 0, notModified: 0, tokens: 0 };

  constructor(private readonly opts: RegistryClientOptions) {
    this.registry = new URL(opts.registry.href.replace(/\/+$/, '') + '/');
    this.dispatcher = createDispatcher({
      insecureTlsHost: opts.insecureTls ? this.registry.hostname : undefined,
      connectTimeoutMs: opts.security.connectTimeoutMs,
      readTimeoutMs: opts.security.readTimeoutMs,
    });
  }

  /** `registry.egi.eu` (with the port when there is one): how messages name the registry. */
  get name(): string {
    return this.registry.host;
  }

  async close(): Promise<void> {
    await this.dispatcher.close().catch(() => undefined);
  }

  /**
   * GET a path of the registry (or a URL on its origin: a pagination link). An answer of 401 is
   * met once: with Basic credentials when the registry asks for them, or with a token from the
   * token service its challenge names; a second 401 (or 403) is a permanent error naming the
   * registry and the credential. A 401 or 403 from another host (blob storage after a redirect)
   * is not the credential's: a transient error naming that host (a signed URL that expired is
   * signed again by the next request to the registry).
   */
  async get(target: string | URL, req: RegistryGet = {}): Promise<HttpResponse> {
    const url = this.resolve(target);
    const scope = req.scope ?? '';
    for (let attempt = 0; ; attempt++) {
      const cached = this.cachedAuthorization(scope);
      if (cached) this.assertSecureChannel(url, 'a token or the login');
      const conditional = Object.keys(req.headers ?? {}).some((h) => h.toLowerCase() === 'if-none-match');
      this.requests.total++;
      if (conditional) this.requests.conditional++;
      const response = await httpGet(url, {
        dispatcher: this.dispatcher,
        redirects: { maxRedirects: this.opts.security.maxRedirects },
        headers: { ...(req.accept ? { accept: req.accept.join(', ') } : {}), ...req.headers },
        credentialHeaders: cached ? { authorization: cached } : undefined,
        signal: req.signal,
        returnStatuses: [401, 403],
      });
      if (response.status === 304 && conditional) this.requests.notModified++;
      if (response.status !== 401 && response.status !== 403) return response;
      await response.body.dump().catch(() => undefined);
      if (response.url.origin !== this.registry.origin) throw this.foreignRefusal(url, response);
      if (response.status === 403 || attempt > 0) throw this.refused(url, response.status);
      await this.authenticate(parseChallenges(response.headers['www-authenticate']), scope, url, req.signal);
    }
  }

  /**
   * A path (`v2/…`, appended to the registry's base, never parsed as a URL of its own) or a URL,
   * which must be on the registry's origin: nothing this client sends its login with leaves it.
   */
  resolve(target: string | URL): URL {
    const url =
      typeof target === 'string' ? new URL(this.registry.href + target.replace(/^\/+/, '')) : new URL(target.href);
    if (url.origin !== this.registry.origin)
      throw new FetchError(
        `registry ${this.name}: ${redact(url)} is not on the registry (${this.registry.origin}); not requested`,
        { permanent: true },
      );
    return url;
  }

  /** GET a JSON document (bounded), with the response's headers. */
  async getJson(
    target: string | URL,
    req: RegistryGet = {},
  ): Promise<{ body: unknown; bytes: Buffer; response: HttpResponse }> {
    const response = await this.get(target, { accept: ['application/json'], ...req });
    const bytes = await readBodyLimited(response, MAX_REGISTRY_JSON_BYTES, `${this.name}: ${redact(response.url)}`);
    try {
      return { body: JSON.parse(bytes.toString('utf8')), bytes, response };
    } catch {
      throw new FetchError(`registry ${this.name}: ${redact(response.url)} did not answer JSON`, { permanent: true });
    }
  }

  /** Pull scope of a repository, for callers that read its tags, manifests and blobs. */
  scopeFor(repository: string): string {
    return pullScope(repository);
  }

  private cachedAuthorization(scope: string): string | undefined {
    const now = Date.now();
    for (const key of [scope, '']) {
      const entry = this.authorizations.get(key);
      if (entry && entry.until > now) return entry.header;
    }
    return undefined;
  }

  /** A 401 or 403 from a host a redirect reached: that host's answer, not a verdict on the credential. */
  private foreignRefusal(url: URL, response: HttpResponse): FetchError {
    return new FetchError(
      `registry ${this.name}: ${response.url.host}, where the registry redirected ${redact(url)}, answered HTTP ${response.status} (blob storage; no credential is sent there, so not the credential's fault: an expired signed URL is signed again on the next attempt)`,
      { status: response.status },
    );
  }

  /** Refuses to send a login or a token over plain http (except to loopback where the site allows it). */
  private assertSecureChannel(url: URL, what: string): void {
    if (secureChannel(url, this.opts.plainHttpOnLoopback)) return;
    const who = this.opts.login ? `the credential '${this.opts.login.name}'` : what;
    throw new FetchError(
      `registry ${this.name}: ${redact(new URL(url.pathname, url))} is plain http; refusing to send ${who} in clear (use https)`,
      { permanent: true },
    );
  }

  private refused(url: URL, status: number): FetchError {
    const who = this.opts.login
      ? `the credential '${this.opts.login.name}' (user ${this.opts.login.username})`
      : 'anonymous access';
    const what = status === 403 ? 'does not allow' : 'refused';
    return new FetchError(
      `registry ${this.name} ${what} ${who} for ${redact(url)} (HTTP ${status}): check the credential and its pull permission`,
      {
        permanent: true,
        status,
      },
    );
  }

  private async authenticate(
    challenges: Challenge[],
    scope: string,
    url: URL,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      const header = await this.fetchToken(bearer, scope, url, signal);
      this.authorizations.set(header.scope, {
        header: `Bearer ${header.token}`,
        until: Date.now() + Math.max(10, header.expiresInS - 10) * 1000,
      });
      if (header.scope !== scope) this.authorizations.set(scope, this.authorizations.get(header.scope)!);
      return;
    }
    if (basic) {
      if (!this.opts.login)
        throw new FetchError(
          `registry ${this.name} requires a login for ${redact(url)}: name a credential in the subscription`,
          { permanent: true, status: 401 },
        );
      this.assertSecureChannel(url, 'the login');
      this.authorizations.set('', {
        header: basicAuth(this.opts.login.username, this.opts.login.password),
        until: Number.POSITIVE_INFINITY,
      });
      return;
    }
    const offered = challenges.map((c) => c.scheme).join(', ') || 'none';
    throw new FetchError(
      `registry ${this.name} answered 401 for ${redact(url)} without a Basic or Bearer challenge (offered: ${offered})`,
      { permanent: true, status: 401 },
    );
  }

  /**
   * The Bearer flow: GET the realm with `service` and `scope` (the challenge's scope, else ours),
   * sending the login as Basic. The realm must be a token service the site trusts with the login:
   * on the registry's own origin or one the configuration names (`tokenRealm`), and over https.
   * Any other realm is refused before a request is made, login or not (a challenge must not make
   * the worker fetch what it names).
   */
  private async fetchToken(
    challenge: Challenge,
    scope: string,
    url: URL,
    signal: AbortSignal | undefined,
  ): Promise<{ token: string; expiresInS: number; scope: string }> {
    const realmText = challenge.params.realm;
    let realm: URL;
    try {
      realm = new URL(realmText ?? '');
    } catch {
      throw new FetchError(`registry ${this.name}: its Bearer challenge names no valid realm ('${realmText ?? ''}')`, {
        permanent: true,
        status: 401,
      });
    }
    const configured = (this.opts.tokenRealms ?? []).some((text) => {
      const allowed = new URL(text);
      return allowed.origin === realm.origin && allowed.pathname === realm.pathname;
    });
    if (realm.origin !== this.registry.origin && !configured)
      throw new FetchError(
        `registry ${this.name}: its challenge names the token service ${redact(new URL(realm.pathname, realm))}, which is neither on the registry nor the subscription's tokenRealm; not contacted`,
        { permanent: true },
      );
    if (!secureChannel(realm, this.opts.plainHttpOnLoopback))
      throw new FetchError(
        `registry ${this.name}: its token service ${redact(new URL(realm.pathname, realm))} is plain http; not contacted (use https)`,
        { permanent: true },
      );
    const wanted = challenge.params.scope ?? scope;
    if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
    if (wanted) for (const s of wanted.split(' ')) realm.searchParams.append('scope', s);
    const login = this.opts.login;
    if (login) realm.searchParams.set('account', login.username);
    this.requests.tokens++;
    const response = await httpGet(realm, {
      dispatcher: this.dispatcher,
      redirects: { maxRedirects: this.opts.security.maxRedirects },
      headers: { accept: 'application/json' },
      credentialHeaders: login ? { authorization: basicAuth(login.username, login.password) } : undefined,
      signal,
      returnStatuses: [401, 403],
    });
    if (response.status === 401 || response.status === 403) {
      await response.body.dump().catch(() => undefined);
      const who = login ? `the credential '${login.name}' (user ${login.username})` : 'an anonymous token';
      throw new FetchError(
        `registry ${this.name}: its token service ${redact(new URL(realm.pathname, realm))} refused ${who} (HTTP ${response.status}) for ${redact(url)}`,
        {
          permanent: true,
          status: response.status,
        },
      );
    }
    const bytes = await readBodyLimited(
      response,
      MAX_REGISTRY_JSON_BYTES,
      `token from ${redact(new URL(realm.pathname, realm))}`,
    );
    let parsed: unknown;
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch {
      parsed = undefined;
    }
    const token = tokenFromResponse(parsed);
    if (!token)
      throw new FetchError(
        `registry ${this.name}: its token service ${redact(new URL(realm.pathname, realm))} answered no token`,
        { permanent: true },
      );
    return { ...token, scope };
  }
}

/**
 * The `rel="next"` target of a `Link` header (registry and Harbor pagination), resolved against
 * `base` (the page that carried it). The caller checks it is on the registry (RegistryClient.resolve).
 */
export function nextLink(header: string | string[] | undefined, base: URL): URL | undefined {
  const values = Array.isArray(header) ? header : header ? [header] : [];
  for (const value of values) {
    for (const part of value.split(/,(?=\s*<)/)) {
      const match = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
      if (match && /(^|;)\s*rel="?next"?\s*(;|$)/i.test(match[2])) {
        try {
          return new URL(match[1], base);
        } catch {
          throw new FetchError(`${redact(base)}: its Link header names an invalid URL ('${match[1]}')`, {
            permanent: true,
          });
        }
      }
    }
  }
  return undefined;
}
