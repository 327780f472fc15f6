/**
 * A client for the read side of an OCI registry (the distribution API, and Harbor's API v2.0 to
 * list a project's repositories): anonymous, basic or Bearer-token access as the registry's
 * challenge asks, the project's redirect policy (credentials never follow a redirect to another
 * host), and errors that name the registry.
 */
import type { Dispatcher } from 'undici';
import type { Config } from '../core/config.js';
import { resolveCredential } from '../core/credentials.js';
import { ConfigError, FetchError } from '../core/errors.js';
import {
  basicAuth,
  createDispatcher,
  httpGet,
  readBodyLimited,
  redact,
  sameHost,
  type HttpResponse,
} from '../core/http.js';
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

export type RegistrySecurity = Pick<Config['security'], 'connectTimeoutMs' | 'readTimeoutMs' | 'maxRedirects'>;

export interface RegistryClientOptions {
  /** The registry's base URL (`https://registry.egi.eu`). */
  registry: URL;
  login?: RegistryLogin;
  security: RegistrySecurity;
  insecureTls?: boolean;
}

export interface RegistryGet {
  accept?: readonly string[];
  /** The token scope the request needs (`repository:<name>:pull`); the registry's challenge names it too. */
  scope?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** The limit on JSON answers (manifests, tag lists, catalogs): the distribution spec caps manifests at 4 MiB. */
export const MAX_REGISTRY_JSON_BYTES = 4 * 1024 * 1024;

export class RegistryClient {
  readonly registry: URL;
  private readonly dispatcher: Dispatcher;
  /** Authorization header per token scope (`''`: the registry asked for Basic, any scope). */
  private readonly authorizations = new Map<string, { header: string; until: number }>();

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
   * GET a path of the registry. An answer of 401 is met once: with Basic credentials when the
   * registry asks for them, or with a token from the token service its challenge names; a second
   * 401 (or 403) is a permanent error naming the registry and the credential.
   */
  async get(pathAndQuery: string, req: RegistryGet = {}): Promise<HttpResponse> {
    const url = new URL(pathAndQuery.replace(/^\/+/, ''), this.registry);
    const scope = req.scope ?? '';
    for (let attempt = 0; ; attempt++) {
      const cached = this.cachedAuthorization(scope);
      const response = await httpGet(url, {
        dispatcher: this.dispatcher,
        redirects: { maxRedirects: this.opts.security.maxRedirects },
        headers: { ...(req.accept ? { accept: req.accept.join(', ') } : {}), ...req.headers },
        credentialHeaders: cached ? { authorization: cached } : undefined,
        signal: req.signal,
        returnStatuses: [401, 403],
      });
      if (response.status !== 401 && response.status !== 403) return response;
      await response.body.dump().catch(() => undefined);
      if (response.status === 403 || attempt > 0) throw this.refused(url, response.status);
      await this.authenticate(parseChallenges(response.headers['www-authenticate']), scope, url);
    }
  }

  /** GET a JSON document (bounded), with the response's headers. */
  async getJson(
    pathAndQuery: string,
    req: RegistryGet = {},
  ): Promise<{ body: unknown; bytes: Buffer; response: HttpResponse }> {
    const response = await this.get(pathAndQuery, { accept: ['application/json'], ...req });
    const bytes = await readBodyLimited(response, MAX_REGISTRY_JSON_BYTES, `${this.name}: ${pathAndQuery}`);
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

  private async authenticate(challenges: Challenge[], scope: string, url: URL): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      const header = await this.fetchToken(bearer, scope, url);
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
   * sending the login as Basic only where it may go: the registry's own host, or a token service
   * over https. A token service on plain http elsewhere would receive the password in clear.
   */
  private async fetchToken(
    challenge: Challenge,
    scope: string,
    url: URL,
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
    const wanted = challenge.params.scope ?? scope;
    if (challenge.params.service) realm.searchParams.set('service', challenge.params.service);
    if (wanted) for (const s of wanted.split(' ')) realm.searchParams.append('scope', s);
    const login = this.opts.login;
    if (login && !sameHost(realm.hostname, this.registry.hostname) && realm.protocol !== 'https:') {
      throw new FetchError(
        `registry ${this.name}: its token service ${redact(realm)} is on another host over plain http; refusing to send the credential '${login.name}' there`,
        {
          permanent: true,
        },
      );
    }
    if (login) realm.searchParams.set('account', login.username);
    const response = await httpGet(realm, {
      dispatcher: this.dispatcher,
      redirects: { maxRedirects: this.opts.security.maxRedirects },
      headers: { accept: 'application/json' },
      credentialHeaders: login ? { authorization: basicAuth(login.username, login.password) } : undefined,
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

/** The `rel="next"` target of a `Link` header (registry and Harbor pagination), relative to `base`. */
export function nextLink(header: string | string[] | undefined, base: URL): string | undefined {
  const values = Array.isArray(header) ? header : header ? [header] : [];
  for (const value of values) {
    for (const part of value.split(/,(?=\s*<)/)) {
      const match = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
      if (match && /(^|;)\s*rel="?next"?\s*(;|$)/i.test(match[2])) {
        const next = new URL(match[1], base);
        return `${next.pathname}${next.search}`;
      }
    }
  }
  return undefined;
}
