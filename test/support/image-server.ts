import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local image server that counts the body bytes it sends, honours `Range: bytes=N-`, and
 * can cut the connection part way (to make a download fail and resume).
 */
export interface ImageRoute {
  body?: Buffer;
  status?: number;
  /** Destroy the socket after sending this many body bytes, this many times. */
  cutAfterBytes?: number;
  cuts?: number;
  ignoreRange?: boolean;
  /** Wait this long before answering (a server slow to send its headers). */
  delayMs?: number;
  /** Send the body `chunkBytes` at a time, `chunkDelayMs` apart (a slow transfer). */
  chunkBytes?: number;
  chunkDelayMs?: number;
}

export interface ImageServer {
  url: string;
  at(p: string): string;
  route(p: string, r: ImageRoute): void;
  /** Body bytes sent per path, over all requests. */
  bytesSent: Map<string, number>;
  ranges: Array<string | undefined>;
  /** The Range header of each request, per path (undefined: a whole GET). */
  rangesByPath: Map<string, Array<string | undefined>>;
  authorizations: Array<string | undefined>;
  close(): Promise<void>;
}

export async function startImageServer(): Promise<ImageServer> {
  const routes = new Map<string, ImageRoute>();
  const bytesSent = new Map<string, number>();
  const ranges: Array<string | undefined> = [];
  const rangesByPath = new Map<string, Array<string | undefined>>();
  const authorizations: Array<string | undefined> = [];
  const server = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    const route = routes.get(p);
    ranges.push(req.headers.range);
    rangesByPath.set(p, [...(rangesByPath.get(p) ?? []), req.headers.range]);
    authorizations.push(req.headers.authorization);
    if (route?.delayMs) setTimeout(() => answer(p, route, req, res), route.delayMs);
    else answer(p, route, req, res);
  });
  const answer = (p: string, route: ImageRoute | undefined, req: http.IncomingMessage, res: http.ServerResponse) => {
    if (!route) return void res.writeHead(404).end('not found');
    if (route.status && route.status !== 200) return void res.writeHead(route.status).end(`status ${route.status}`);
    let body = route.body ?? Buffer.alloc(0);
    let status = 200;
    const headers: Record<string, string> = { 'accept-ranges': 'bytes' };
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range && !route.ignoreRange) {
      const start = Number(range[1]);
      if (start >= body.length) return void res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
      headers['content-range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
      body = body.subarray(start);
      status = 206;
    }
    headers['content-length'] = String(body.length);
    res.writeHead(status, headers);
    const count = (n: number) => bytesSent.set(p, (bytesSent.get(p) ?? 0) + n);
    if (route.cutAfterBytes !== undefined && (route.cuts ?? 1) > 0) {
      route.cuts = (route.cuts ?? 1) - 1;
      const part = body.subarray(0, route.cutAfterBytes);
      count(part.length);
      res.write(part, () => setTimeout(() => res.destroy(), 20));
      return;
    }
    if (route.chunkBytes) {
      const size = route.chunkBytes;
      let at = 0;
      const next = () => {
        if (res.destroyed) return;
        if (at >= body.length) return void res.end();
        const part = body.subarray(at, at + size);
        at += part.length;
        count(part.length);
        res.write(part);
        setTimeout(next, route.chunkDelayMs ?? 10);
      };
      next();
      return;
    }
    count(body.length);
    res.end(body);
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    at: (p) => `${url}${p}`,
    route: (p, r) => void routes.set(p, r),
    bytesSent,
    ranges,
    rangesByPath,
    authorizations,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
