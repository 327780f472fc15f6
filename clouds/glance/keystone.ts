/**
 * Keystone v3 authentication for the Glance target: an application credential (what EGI asks
 * sites to use) or a user's password scoped to a project. Holds one token at a time, renews
 * it before it expires (uploads of large images outlast short-lived tokens) and when a service
 * answers 401, and finds service endpoints in the token's catalog.
 */
import { request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { describeFetchFailure, redact } from '../../core/http.js';
import { registerSecrets } from '../../core/logging.js';
import { CloudApiError } from './errors.js';

export type KeystoneCredential =
  | { type: 'application-credential'; id: string; secret: string }
  | {
      type: 'password';
      username: string;
      userDomain: string;
      password: string;
      project: string;
      projectDomain: string;
    };

type EndpointInterface = 'public' | 'internal' | 'admin';

interface KeystoneOptions {
  /** Keystone's v3 URL, e.g. https://keystone.example.org:5000/v3 (a URL without /v3 gets it added). */
  authUrl: string;
  credential: KeystoneCredential;
  /** Region of the endpoints to use; any region when absent (an error when that is ambiguous). */
  region?: string;
  interface: EndpointInterface;
  dispatcher?: Dispatcher;
  /**
   * Renew a token this long before it expires. Unset: 5 minutes, or a quarter of the token's
   * lifetime when that is shorter, so a short-lived token is not renewed on every call.
   */
  renewBeforeMs?: number;
  timeoutMs?: number;
}

const TokenBodySchema = z.object({
  token: z.object({
    expires_at: z.string(),
    issued_at: z.string(),
    project: z.object({ id: z.string(), name: z.string().optional() }).optional(),
    user: z.object({ id: z.string(), name: z.string().optional() }).optional(),
    catalog: z
      .array(
        z.object({
          type: z.string(),
          name: z.string().optional(),
          endpoints: z.array(
            z.object({
              interface: z.string(),
              url: z.string(),
              region: z.string().nullish(),
              region_id: z.string().nullish(),
            }),
          ),
        }),
      )
      .default([]),
  }),
});
type Catalog = z.infer<typeof TokenBodySchema>['token']['catalog'];

interface Token {
  value: string;
  issuedAt: number;
  expiresAt: number;
  projectId: string;
  userId?: string;
  catalog: Catalog;
}

/** `…/v3` for any spelling of Keystone's URL (with or without /v3, trailing slash). */
export function keystoneV3Url(authUrl: string): string {
  const trimmed = authUrl.replace(/\/+$/, '');
  return /\/v3$/.test(trimmed) ? trimmed : `${trimmed}/v3`;
}

/** The body of POST /v3/auth/tokens for a credential. */
export function authRequestBody(credential: KeystoneCredential): unknown {
  if (credential.type === 'application-credential') {
    // An application credential is bound to its project: no scope may be given.
    return {
      auth: {
        identity: {
          methods: ['application_credential'],
          application_credential: { id: credential.id, secret: credential.secret },
        },
      },
    };
  }
  return {
    auth: {
      identity: {
        methods: ['password'],
        password: {
          user: { name: credential.username, domain: { name: credential.userDomain }, password: credential.password },
        },
      },
      scope: { project: { name: credential.project, domain: { name: credential.projectDomain } } },
    },
  };
}

/** The endpoint of a service type in a catalog, for an interface and (optionally) a region. */
export function catalogEndpoint(
  catalog: Catalog,
  serviceType: string,
  iface: EndpointInterface,
  region?: string,
): string {
  const services = catalog.filter((s) => s.type === serviceType);
  if (services.length === 0)
    throw new CloudApiError(`Keystone's catalog has no '${serviceType}' service`, { permanent: true });
  const endpoints = services
    .flatMap((s) => s.endpoints)
    .filter((e) => e.interface === iface && (region === undefined || e.region_id === region || e.region === region));
  const urls = [...new Set(endpoints.map((e) => e.url.replace(/\/+$/, '')))];
  const where = `interface ${iface}${region ? `, region ${region}` : ''}`;
  if (urls.length === 0) {
    const regions = [
      ...new Set(services.flatMap((s) => s.endpoints).map((e) => `${e.interface}@${e.region_id ?? e.region ?? '?'}`)),
    ];
    throw new CloudApiError(
      `Keystone's catalog has no '${serviceType}' endpoint for ${where} (it has: ${regions.join(', ') || 'none'})`,
      {
        permanent: true,
      },
    );
  }
  if (urls.length > 1)
    throw new CloudApiError(`Keystone's catalog has several '${serviceType}' endpoints for ${where}: name the region`, {
      permanent: true,
    });
  return urls[0];
}

export class KeystoneSession {
  private current?: Token;
  private pending?: Promise<Token>;
  /** How many tokens this session has obtained (for logs and tests). */
  authentications = 0;
  readonly url: string;

  constructor(private readonly opts: KeystoneOptions) {
    this.url = keystoneV3Url(opts.authUrl);
    registerSecrets([opts.credential.type === 'password' ? opts.credential.password : opts.credential.secret]);
  }

  /** A valid token, renewed when it expires soon. */
  async token(): Promise<string> {
    return (await this.valid()).value;
  }

  /** The project the token is scoped to: the owner of the images we create. */
  async projectId(): Promise<string> {
    return (await this.valid()).projectId;
  }

  /** The URL of a service (e.g. `image`) from the catalog, by the configured interface and region. */
  async endpoint(serviceType: string): Promise<string> {
    return catalogEndpoint((await this.valid()).catalog, serviceType, this.opts.interface, this.opts.region);
  }

  /** A service refused `token` (401): the next call gets a new one. */
  invalidate(token: string): void {
    if (this.current?.value === token) this.current = undefined;
  }

  private async valid(): Promise<Token> {
    const token = this.current;
    if (token && !this.expiresSoon(token)) return token;
    // One authentication at a time, whoever asks.
    this.pending ??= this.authenticate().finally(() => (this.pending = undefined));
    this.current = await this.pending;
    return this.current;
  }

  private expiresSoon(token: Token): boolean {
    const lifetime = token.expiresAt - token.issuedAt;
    const margin =
      this.opts.renewBeforeMs !== undefined
        ? Math.min(this.opts.renewBeforeMs, lifetime - 1000)
        : Math.min(5 * 60_000, lifetime / 4);
    return Date.now() >= token.expiresAt - margin;
  }

  private async authenticate(): Promise<Token> {
    const url = `${this.url}/auth/tokens`;
    const what =
      this.opts.credential.type === 'password'
        ? `user ${this.opts.credential.username}`
        : `application credential ${this.opts.credential.id}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(authRequestBody(this.opts.credential)),
        dispatcher: this.opts.dispatcher,
        headersTimeout: this.opts.timeoutMs ?? 60_000,
        bodyTimeout: this.opts.timeoutMs ?? 60_000,
      });
    } catch (err) {
      throw new CloudApiError(
        `Keystone at ${redact(url)} cannot be reached: ${describeFetchFailure(err, url).message}`,
        { cause: err },
      );
    }
    const text = await res.body.text();
    if (res.statusCode !== 201 && res.statusCode !== 200) {
      const refused =
        res.statusCode === 401
          ? ` refused ${what} (check the credential and its project)`
          : ` answered HTTP ${res.statusCode}`;
      throw new CloudApiError(`Keystone at ${redact(this.url)}${refused}: ${errorText(text)}`, {
        status: res.statusCode,
      });
    }
    const value = res.headers['x-subject-token'];
    const parsed = TokenBodySchema.safeParse(safeJson(text));
    if (typeof value !== 'string' || !parsed.success) {
      throw new CloudApiError(
        `Keystone at ${redact(this.url)} answered without a token (no X-Subject-Token or an unexpected body)`,
      );
    }
    const body = parsed.data.token;
    if (!body.project)
      throw new CloudApiError(`Keystone gave ${what} a token that is not scoped to a project`, { permanent: true });
    this.authentications += 1;
    return {
      value,
      issuedAt: Date.parse(body.issued_at),
      expiresAt: Date.parse(body.expires_at),
      projectId: body.project.id,
      userId: body.user?.id,
      catalog: body.catalog,
    };
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The message of an OpenStack error body (JSON `error.message`, Glance's HTML or plain text), one line. */
export function errorText(text: string): string {
  const json = safeJson(text) as { error?: { message?: string }; message?: string } | undefined;
  const message = json?.error?.message ?? json?.message ?? text.replace(/<[^>]*>/g, ' ');
  return message.replace(/\s+/g, ' ').trim().slice(0, 300) || '(empty body)';
}
