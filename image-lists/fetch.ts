import { open } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Config } from '../core/config.js';
import { FetchError, InvalidInputError } from '../core/errors.js';
import { basicAuth, createDispatcher, httpGet, readBodyLimited, redact } from '../core/http.js';
import { realPathInFolders } from '../core/paths.js';

/** The fixed password of AppDB's token scheme: the token is the Basic-auth user name. */
export const APPDB_TOKEN_PASSWORD = 'x-oauth-basic';

interface ImageListSource {
  /** The URL as given, credentials removed. */
  url: string;
  /** Where the bytes finally came from (after redirects, or the real path of a file). */
  from: string;
  bytes: Buffer;
  /** The validators the server gave, for the next conditional request (subscriptions). */
  etag?: string;
  lastModified?: string;
}

/** What the last accepted copy of a list looked like, so an unchanged list costs one request and no body. */
export interface ListValidators {
  etag?: string;
  lastModified?: string;
}

interface FetchImageListOptions {
  token?: string;
  insecureTls?: boolean;
  /** Ask for the list only if it changed (If-None-Match / If-Modified-Since). */
  ifChanged?: ListValidators;
  /** Stops the request (a sync's cancellation: its run timed out or was cancelled). */
  signal?: AbortSignal;
  security: Pick<
    Config['security'],
    'connectTimeoutMs' | 'readTimeoutMs' | 'maxImageListBytes' | 'maxRedirects' | 'allowedFileFolders'
  >;
}

/**
 * Parses the image list URL given on the command line. A token written as URL userinfo
 * (`https://TOKEN:x-oauth-basic@host/…`, the AppDB FAQ form) is taken out of the URL so
 * it is sent only as the Authorization header and never appears in a message.
 */
export function parseImageListUrl(raw: string): { url: URL; token?: string } {
  let url: URL;
  try {
    // The original accepted a relative `file:name` (relative to the current folder); WHATWG
    // URL parsing would read it as `/name`.
    url = /^file:[^/]/i.test(raw)
      ? new URL(raw.slice('file:'.length), pathToFileURL(`${process.cwd()}/`))
      : new URL(raw);
  } catch {
    throw new InvalidInputError(`--image-list-url: '${raw}' is not a URL (expected http:, https: or file:)`);
  }
  if (!['http:', 'https:', 'file:'].includes(url.protocol)) {
    throw new InvalidInputError(
      `--image-list-url: scheme ${url.protocol} is not supported (expected http:, https: or file:)`,
    );
  }
  let token: string | undefined;
  if (url.username) {
    token = decodeURIComponent(url.username);
    url.username = '';
    url.password = '';
  }
  return { url, token };
}

function conditionalHeaders(validators: ListValidators | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  if (validators?.etag) headers['if-none-match'] = validators.etag;
  if (validators?.lastModified) headers['if-modified-since'] = validators.lastModified;
  return headers;
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Fetches the list; `undefined` when `ifChanged` was given and the server answered 304 Not Modified. */
export async function fetchImageList(
  url: URL,
  opts: FetchImageListOptions & { ifChanged: ListValidators },
): Promise<ImageListSource | undefined>;
export async function fetchImageList(url: URL, opts: FetchImageListOptions): Promise<ImageListSource>;
export async function fetchImageList(url: URL, opts: FetchImageListOptions): Promise<ImageListSource | undefined> {
  if (url.protocol === 'file:') return readImageListFile(url, opts.security);
  const dispatcher = createDispatcher({
    insecureTlsHost: opts.insecureTls ? url.hostname : undefined,
    connectTimeoutMs: opts.security.connectTimeoutMs,
    readTimeoutMs: opts.security.readTimeoutMs,
  });
  try {
    const response = await httpGet(url, {
      dispatcher,
      redirects: { maxRedirects: opts.security.maxRedirects },
      headers: conditionalHeaders(opts.ifChanged),
      credentialHeaders: opts.token ? { authorization: basicAuth(opts.token, APPDB_TOKEN_PASSWORD) } : undefined,
      signal: opts.signal,
    });
    if (response.status === 304) {
      await response.body.dump().catch(() => undefined);
      return undefined;
    }
    const bytes = await readBodyLimited(
      response,
      opts.security.maxImageListBytes,
      `image list ${redact(url)}`,
      'security.maxImageListBytes',
    );
    return {
      url: redact(url),
      from: redact(response.url),
      bytes,
      etag: header(response.headers.etag),
      lastModified: header(response.headers['last-modified']),
    };
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

async function readImageListFile(url: URL, security: FetchImageListOptions['security']): Promise<ImageListSource> {
  let requested: string;
  try {
    requested = fileURLToPath(url); // percent-decodes, refuses file://otherhost/
  } catch (err) {
    throw new InvalidInputError(`--image-list-url: ${url.href} is not a local file URL: ${(err as Error).message}`);
  }
  if (security.allowedFileFolders.length === 0) {
    throw new InvalidInputError(
      `file: image lists are disabled: ${requested} is refused (list the folders in security.allowedFileFolders)`,
    );
  }
  let found: { real: string; inside: boolean };
  try {
    found = await realPathInFolders(requested, security.allowedFileFolders, 'image list file');
  } catch (err) {
    if (err instanceof InvalidInputError) throw err;
    throw new FetchError(`image list file ${requested} not found`, { permanent: true });
  }
  // Symlinks are resolved on both sides, so a link inside an allowed folder cannot point out of it.
  const { real } = found;
  if (!found.inside) {
    throw new InvalidInputError(
      `image list file ${requested}${real !== requested ? ` (really ${real})` : ''} is outside security.allowedFileFolders (${security.allowedFileFolders.join(', ')})`,
    );
  }
  const handle = await open(real, 'r');
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new InvalidInputError(`image list ${real} is not a regular file`);
    if (stat.size > security.maxImageListBytes) {
      throw new FetchError(
        `image list ${real} is too large: ${stat.size} bytes, the limit is ${security.maxImageListBytes} (security.maxImageListBytes)`,
        { permanent: true },
      );
    }
    return { url: url.href, from: real, bytes: await handle.readFile() };
  } finally {
    await handle.close();
  }
}
