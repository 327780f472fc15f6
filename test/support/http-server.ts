import { execFile } from 'node:child_process';
import { readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * A real local HTTP or HTTPS server for tests of everything that fetches: image lists and
 * image downloads. Routes serve in-memory bodies or files (with Range support), redirect,
 * answer with a status, or answer slowly; every request's headers are recorded.
 */

export interface Route {
  /** Body to serve (200, or 206 for a satisfiable Range request). */
  body?: Buffer | string;
  /** A file to serve instead of `body`. */
  file?: string;
  status?: number;
  headers?: Record<string, string>;
  /** Answer with a redirect (302 unless `status` says otherwise) to this location. */
  redirect?: string;
  /** Wait this long before sending the headers. */
  delayMs?: number;
  /** Send the body in this many pieces with `chunkDelayMs` between them (a slow server). */
  chunks?: number;
  chunkDelayMs?: number;
  /** Do not honour Range requests (answer 200 with the whole body). */
  ignoreRange?: boolean;
  /** Answer 401 unless the request's Authorization header is exactly this (a private image). */
  authorization?: string;
  /** Send this ETag, and answer 304 Not Modified to a request whose If-None-Match names it. */
  etag?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

export interface TestServer {
  /** Base URL, e.g. `https://localhost:41234`. */
  url: string;
  port: number;
  requests: RecordedRequest[];
  /** Adds or replaces a route (exact path, query string ignored). */
  route(pathname: string, route: Route): void;
  /** The URL of a path on this server. */
  at(pathname: string): string;
  close(): Promise<void>;
}

export interface SelfSignedCertificate {
  cert: string;
  key: string;
  certPath: string;
  dir: string;
  cleanup(): Promise<void>;
}

/** Generates a self-signed certificate for `localhost` and 127.0.0.1 with the openssl command. */
export async function generateSelfSignedCertificate(commonName = 'localhost'): Promise<SelfSignedCertificate> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-test-cert-'));
  const keyPath = path.join(dir, 'key.pem');
  const certPath = path.join(dir, 'cert.pem');
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-sha256',
    '-days',
    '2',
    '-subj',
    `/CN=${commonName}`,
    '-addext',
    `subjectAltName=DNS:${commonName},IP:127.0.0.1`,
    '-keyout',
    keyPath,
    '-out',
    certPath,
  ]);
  return {
    cert: await readFile(certPath, 'utf8'),
    key: await readFile(keyPath, 'utf8'),
    certPath,
    dir,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface StartOptions {
  /** Serve HTTPS with this certificate (see generateSelfSignedCertificate). */
  tls?: { cert: string; key: string };
  routes?: Record<string, Route>;
  /** Host name used in `url` (default 127.0.0.1; use `localhost` to match a certificate). */
  hostname?: string;
}

// Unref: a slow route still sleeping must not keep the test process alive after close().
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export async function startTestServer(opts: StartOptions = {}): Promise<TestServer> {
  const routes = new Map<string, Route>(Object.entries(opts.routes ?? {}));
  const requests: RecordedRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const pathname = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({ method: req.method ?? 'GET', path: pathname, headers: req.headers });
    serve(routes.get(pathname), req, res).catch(() => res.destroy());
  };
  const server = opts.tls
    ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, handler)
    : http.createServer(handler);
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const base = `${opts.tls ? 'https' : 'http'}://${opts.hostname ?? '127.0.0.1'}:${port}`;
  return {
    url: base,
    port,
    requests,
    route: (p, r) => void routes.set(p, r),
    at: (p) => `${base}${p.startsWith('/') ? p : `/${p}`}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function serve(route: Route | undefined, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!route) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  if (route.delayMs) await sleep(route.delayMs);
  if (route.authorization !== undefined && req.headers.authorization !== route.authorization) {
    res
      .writeHead(401, { 'www-authenticate': 'Basic realm="images"', 'content-type': 'text/plain' })
      .end('unauthorized\n');
    return;
  }
  if (route.etag && req.headers['if-none-match'] === route.etag) {
    res.writeHead(304, { etag: route.etag }).end();
    return;
  }
  if (route.redirect) {
    res.writeHead(route.status ?? 302, { location: route.redirect, ...route.headers }).end();
    return;
  }
  let body: Buffer;
  if (route.file) {
    await stat(route.file);
    body = await readFile(route.file);
  } else body = Buffer.isBuffer(route.body) ? route.body : Buffer.from(route.body ?? '');
  let status = route.status ?? 200;
  const headers: Record<string, string> = {
    'accept-ranges': 'bytes',
    ...(route.etag ? { etag: route.etag } : {}),
    ...route.headers,
  };
  const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''));
  if (range && !route.ignoreRange && status === 200) {
    const start = range[1] === '' ? Math.max(0, body.length - Number(range[2])) : Number(range[1]);
    const end = range[1] === '' || range[2] === '' ? body.length - 1 : Math.min(Number(range[2]), body.length - 1);
    if (start >= body.length || start > end) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    headers['content-range'] = `bytes ${start}-${end}/${body.length}`;
    body = body.subarray(start, end + 1);
    status = 206;
  }
  headers['content-length'] ??= String(body.length);
  res.writeHead(status, headers);
  const pieces = Math.max(1, route.chunks ?? 1);
  const size = Math.ceil(body.length / pieces) || 1;
  for (let offset = 0; offset < body.length; offset += size) {
    if (offset > 0 && route.chunkDelayMs) await sleep(route.chunkDelayMs);
    if (res.destroyed || res.writableEnded || !res.socket) return;
    res.write(body.subarray(offset, offset + size));
  }
  res.end();
}
