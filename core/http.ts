import { Agent, buildConnector, request, type Dispatcher } from 'undici';
import { FetchError } from './errors.js';

/**
 * HTTP primitives shared by everything that fetches from the network (image lists, image
 * downloads): one dispatcher factory (timeouts, optional insecure TLS), one redirect policy
 * (bounded, no https→http downgrade, credentials only to the origin they were meant for)
 * and one mapping from low-level failures to a FetchError that says what happened.
 */

interface DispatcherOptions {
  /**
   * The one host whose TLS certificate and host name are not checked (`--insecure-ssl`): the
   * host name of the URL the event or the command names (any port). Every other host, a
   * redirect target included, is verified as usual. Off when absent; callers log a warning when on.
   */
  insecureTlsHost?: string;
  connectTimeoutMs: number;
  /** Longest silence allowed while waiting for headers or between body chunks. */
  readTimeoutMs: number;
}

/** Host names compare without IPv6 brackets, case and a trailing dot. */
function sameHost(a: string, b: string): boolean {
  const norm = (h: string) =>
    h
      .replace(/^\[(.*)\]$/, '$1')
      .replace(/\.$/, '')
      .toLowerCase();
  return norm(a) === norm(b);
}

/** Which host a dispatcher from createDispatcher skips TLS checks for (for error messages). */
const insecureHosts = new WeakMap<Dispatcher, string>();

export function createDispatcher(opts: DispatcherOptions): Dispatcher {
  const timeouts = {
    connectTimeout: opts.connectTimeoutMs,
    headersTimeout: opts.readTimeoutMs,
    bodyTimeout: opts.readTimeoutMs,
  };
  const insecureHost = opts.insecureTlsHost;
  if (!insecureHost)
    return new Agent({ connect: { timeout: opts.connectTimeoutMs, rejectUnauthorized: true }, ...timeouts });
  // One connector per trust level, chosen per connection by the host it goes to: a redirect
  // to another host must not inherit the operator's exception for the image host.
  const verified = buildConnector({ timeout: opts.connectTimeoutMs, rejectUnauthorized: true });
  const unverified = buildConnector({ timeout: opts.connectTimeoutMs, rejectUnauthorized: false });
  const agent = new Agent({
    connect: (options, callback) =>
      (sameHost(options.hostname, insecureHost) ? unverified : verified)(options, callback),
    ...timeouts,
  });
  insecureHosts.set(agent, insecureHost);
  return agent;
}

interface RedirectPolicy {
  maxRedirects: number;
}

/** What to do with a redirect: follow it to `url` (sending credentials or not), or refuse. */
type RedirectDecision = { follow: true; url: URL; keepCredentials: boolean } | { follow: false; reason: string };

/**
 * Pure redirect policy. `origin` is where the credentials were meant to go: they follow a
 * redirect only while it stays on that origin (scheme, host and port), or upgrades it to https.
 */
export function decideRedirect(
  from: URL,
  location: string | undefined,
  origin: URL,
  hops: number,
  policy: RedirectPolicy,
): RedirectDecision {
  if (!location) return { follow: false, reason: `redirect from ${redact(from)} has no Location header` };
  if (hops >= policy.maxRedirects)
    return { follow: false, reason: `too many redirects (more than ${policy.maxRedirects}) from ${redact(from)}` };
  let next: URL;
  try {
    next = new URL(location, from);
  } catch {
    return { follow: false, reason: `redirect from ${redact(from)} to an invalid URL` };
  }
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    return { follow: false, reason: `redirect from ${redact(from)} to unsupported scheme ${next.protocol}` };
  }
  if (from.protocol === 'https:' && next.protocol === 'http:') {
    return { follow: false, reason: `refusing redirect from https to plain http (${redact(from)} → ${redact(next)})` };
  }
  // An http→https upgrade on the same host (default ports) keeps them too: same server, safer channel.
  const upgrade =
    origin.protocol === 'http:' &&
    next.protocol === 'https:' &&
    origin.port === '' &&
    next.port === '' &&
    next.hostname === origin.hostname;
  return { follow: true, url: next, keepCredentials: next.origin === origin.origin || upgrade };
}

/** A URL for messages: userinfo removed, since it may carry a token. */
export function redact(url: URL | string): string {
  const u = new URL(typeof url === 'string' ? url : url.href);
  u.username = '';
  u.password = '';
  return u.href;
}

interface HttpGetOptions {
  dispatcher: Dispatcher;
  redirects: RedirectPolicy;
  headers?: Record<string, string>;
  /** Headers (e.g. Authorization) sent only to the origin of the first URL. */
  credentialHeaders?: Record<string, string>;
  /**
   * The credential headers go only over https with the certificate checked: never to an http URL
   * nor to the host the dispatcher skips TLS checks for (`--insecure-ssl`), whatever the caller
   * decided (an image download's token; defence in depth behind core/credentials.ts).
   */
  credentialsOverVerifiedTlsOnly?: boolean;
  /** A 206 is expected (resumed download); any other success status is still returned. */
  signal?: AbortSignal;
  /** Error statuses returned to the caller instead of thrown (an OCI registry's 401 carries its auth challenge). */
  returnStatuses?: readonly number[];
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** The URL that finally answered, after redirects. */
  url: URL;
}

/**
 * GET with the redirect policy applied. Returns the first non-redirect response with status
 * < 400; anything else becomes a FetchError (404/410 and other 4xx permanent, 5xx transient).
 */
export async function httpGet(url: URL, opts: HttpGetOptions): Promise<HttpResponse> {
  const origin = url;
  let current = url;
  let withCredentials = true;
  for (let hops = 0; ; hops++) {
    const headers: Record<string, string> = { 'user-agent': 'snf-vmcatcher', ...opts.headers };
    if (withCredentials && (!opts.credentialsOverVerifiedTlsOnly || verifiedTls(current, opts.dispatcher)))
      Object.assign(headers, opts.credentialHeaders);
    let response: Dispatcher.ResponseData;
    try {
      const target = new URL(current.href);
      target.username = '';
      target.password = '';
      response = await request(target, { method: 'GET', headers, dispatcher: opts.dispatcher, signal: opts.signal });
    } catch (err) {
      throw explainTlsScope(describeFetchFailure(err, current), current, opts.dispatcher);
    }
    const { statusCode } = response;
    if (statusCode >= 300 && statusCode < 400 && statusCode !== 304) {
      await response.body.dump().catch(() => undefined);
      const location = response.headers.location;
      const decision = decideRedirect(
        current,
        Array.isArray(location) ? location[0] : location,
        origin,
        hops,
        opts.redirects,
      );
      if (!decision.follow) throw new FetchError(decision.reason, { permanent: true, status: statusCode });
      current = decision.url;
      withCredentials = withCredentials && decision.keepCredentials;
      continue;
    }
    if (statusCode >= 400 && !opts.returnStatuses?.includes(statusCode)) {
      await response.body.dump().catch(() => undefined);
      throw httpStatusError(statusCode, current);
    }
    return { status: statusCode, headers: response.headers, body: response.body, url: current };
  }
}

/** Whether a request to `url` over `dispatcher` is https with the server's certificate checked. */
function verifiedTls(url: URL, dispatcher: Dispatcher): boolean {
  const insecureHost = insecureHosts.get(dispatcher);
  return url.protocol === 'https:' && (insecureHost === undefined || !sameHost(url.hostname, insecureHost));
}

/** A TLS failure on a host that `--insecure-ssl` does not cover says so, and which host it does cover. */
function explainTlsScope(err: FetchError, url: URL, dispatcher: Dispatcher): FetchError {
  const insecureHost = insecureHosts.get(dispatcher);
  if (!insecureHost || sameHost(url.hostname, insecureHost) || !err.message.startsWith('TLS error')) return err;
  const message = err.message.replace(
    / \(use --insecure-ssl only if you trust this server\)$/,
    ` (host ${url.hostname} is verified: --insecure-ssl covers only the image host ${insecureHost}, not the hosts it redirects to)`,
  );
  return new FetchError(message, { permanent: err.permanent, status: err.status, cause: err.cause });
}

function httpStatusError(status: number, url: URL): FetchError {
  // 408 and 429 are "try later"; every other 4xx will answer the same way next time.
  const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
  const hint = status === 401 || status === 403 ? ' (check the token)' : '';
  return new FetchError(`GET ${redact(url)} failed: HTTP ${status}${hint}`, { permanent, status });
}

const TLS_CODES: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in the chain',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to verify the certificate (unknown issuer)',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to verify the certificate (unknown issuer)',
  CERT_HAS_EXPIRED: 'certificate has expired',
  CERT_NOT_YET_VALID: 'certificate is not yet valid',
  ERR_TLS_CERT_ALTNAME_INVALID: 'certificate does not match the host name',
  ERR_SSL_WRONG_VERSION_NUMBER: 'TLS handshake failed (is the server speaking plain HTTP?)',
};

/**
 * Maps a network failure (undici, Node net/tls errors) to one FetchError line that says
 * what happened. TLS problems and unknown hosts are permanent: retrying will not fix them.
 */
export function describeFetchFailure(err: unknown, url?: URL | string): FetchError {
  if (err instanceof FetchError) return err;
  const where = url ? ` ${redact(url)}` : '';
  const chain: Array<{ code?: string; message?: string; name?: string }> = [];
  for (
    let e = err as { code?: string; message?: string; cause?: unknown } | undefined;
    e && chain.length < 5;
    e = e.cause as typeof e
  ) {
    chain.push(e);
  }
  const codes = chain.map((e) => e.code ?? '');
  const has = (...wanted: string[]) => codes.some((c) => wanted.includes(c));
  const tls = codes.find((c) => c in TLS_CODES);
  if (tls) {
    return new FetchError(
      `TLS error fetching${where}: ${TLS_CODES[tls]} (use --insecure-ssl only if you trust this server)`,
      { permanent: true, cause: err },
    );
  }
  if (has('UND_ERR_CONNECT_TIMEOUT')) return new FetchError(`connect timeout fetching${where}`, { cause: err });
  if (has('UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT'))
    return new FetchError(`read timeout fetching${where}: the server stopped answering`, { cause: err });
  if (has('ECONNREFUSED')) return new FetchError(`connection refused fetching${where}`, { cause: err });
  if (has('ENOTFOUND', 'EAI_AGAIN'))
    return new FetchError(`unknown host fetching${where}`, { permanent: !has('EAI_AGAIN'), cause: err });
  if (has('ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE'))
    return new FetchError(`connection reset fetching${where}`, { cause: err });
  if (has('UND_ERR_ABORTED', 'ABORT_ERR') || chain.some((e) => e.name === 'AbortError'))
    return new FetchError(`fetching${where} was cancelled`, { cause: err });
  const tlsMessage = chain.find((e) => /certificate|ssl|tls/i.test(e.message ?? ''));
  if (tlsMessage)
    return new FetchError(`TLS error fetching${where}: ${tlsMessage.message}`, { permanent: true, cause: err });
  const first = chain[0];
  return new FetchError(`fetching${where} failed: ${first?.message ?? String(err)}`, { cause: err });
}

/** Reads a whole body into memory, refusing more than `maxBytes` (checked before and while reading). */
export async function readBodyLimited(
  response: HttpResponse,
  maxBytes: number,
  what: string,
  /** The configuration key that sets the limit, named in the refusal. */
  limitKey?: string,
): Promise<Buffer> {
  const declared = Number(response.headers['content-length']);
  const key = limitKey ? ` (${limitKey})` : '';
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body.dump().catch(() => undefined);
    throw new FetchError(`${what} is too large: ${declared} bytes declared, the limit is ${maxBytes}${key}`, {
      permanent: true,
    });
  }
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of response.body) {
      total += (chunk as Buffer).length;
      if (total > maxBytes) {
        response.body.destroy();
        throw new FetchError(`${what} is too large: more than ${maxBytes} bytes, the limit${key}`, { permanent: true });
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    throw describeFetchFailure(err, response.url);
  }
  return Buffer.concat(chunks);
}

/** `Authorization` value for HTTP Basic. */
export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}
