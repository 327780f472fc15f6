import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRequest {
  range?: string;
  status: number;
  /** Body bytes actually written to the socket for this request. */
  bytesSent: number;
  startedAt: number;
}

/**
 * Serves one file with Range support at a fixed rate, counting the body bytes it really sends per
 * request: what resuming a download must keep small.
 */
export async function startThrottledFileServer(file: string, bytesPerSecond: number) {
  const { size } = await stat(file);
  const served: ServedRequest[] = [];
  const server = http.createServer((req, res) => {
    const record: ServedRequest = { range: req.headers.range, status: 200, bytesSent: 0, startedAt: Date.now() };
    served.push(record);
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ''));
    if (m) {
      start = Number(m[1]);
      if (start >= size) {
        record.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      record.status = 206;
      res.writeHead(206, { 'content-length': String(size - start), 'content-range': `bytes ${start}-${size - 1}/${size}`, 'accept-ranges': 'bytes' });
    } else {
      res.writeHead(200, { 'content-length': String(size), 'accept-ranges': 'bytes' });
    }
    const stream = createReadStream(file, { start, highWaterMark: 1024 * 1024 });
    const begun = Date.now();
    stream.on('data', (chunk) => {
      res.write(chunk);
      record.bytesSent += chunk.length;
      // Pause until the rate allows the next chunk.
      const due = begun + (record.bytesSent / bytesPerSecond) * 1000;
      const wait = due - Date.now();
      if (wait > 0) {
        stream.pause();
        setTimeout(() => stream.resume(), wait);
      }
    });
    stream.on('end', () => res.end());
    stream.on('error', () => res.destroy());
    res.on('close', () => stream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/image.raw`,
    size,
    served,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
