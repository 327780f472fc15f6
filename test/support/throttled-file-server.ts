import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { execa } from 'execa';
import { snapshot } from '../../cli/progress.js';
import { ROOT } from './cli.js';
import { writeLinuxMbr } from './disk-images.js';

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
      res.writeHead(206, {
        'content-length': String(size - start),
        'content-range': `bytes ${start}-${size - 1}/${size}`,
        'accept-ranges': 'bytes',
      });
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

/**
 * A folder under the project's tmp/ (large files: /tmp may be small) holding a raw disk of random
 * bytes behind an MBR, served at a fixed rate: slow enough to kill a worker in the middle of its download.
 */
export async function slowImageDownload(prefix: string, sizeBytes: number, bytesPerSecond: number) {
  await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
  const dir = await mkdtemp(path.join(ROOT, 'tmp', `${prefix}-`));
  const image = path.join(dir, 'image.raw');
  await execa('dd', [
    'if=/dev/urandom',
    `of=${image}`,
    'bs=1M',
    `count=${Math.ceil(sizeBytes / 1024 / 1024)}`,
    'status=none',
  ]);
  // A partition table, so the image passes as a raw disk (random bytes are not a disk).
  await writeLinuxMbr(image, sizeBytes);
  const sha512 = (await execa('sha512sum', [image])).stdout.split(' ')[0];
  const server = await startThrottledFileServer(image, bytesPerSecond);
  return {
    dir,
    sha512,
    server,
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until a workflow's running download has reported at least `bytes` in its heartbeats. */
export async function waitForDownloadOffset(
  handle: WorkflowHandle,
  bytes: number,
  timeoutMs = 30_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let offset = 0;
  while (offset < bytes && Date.now() < deadline) {
    offset = (await snapshot(handle)).bytesDone ?? 0;
    if (offset < bytes) await new Promise((r) => setTimeout(r, 100));
  }
  return offset;
}

/**
 * A raw disk of `mib` MiB (random bytes behind an MBR, as raw images must look like disks) written
 * into `dir` and served at `bytesPerSecond`, with its sha512: one distinct image for a test.
 */
export async function servedDisk(dir: string, name: string, mib: number, bytesPerSecond: number) {
  const file = path.join(dir, name);
  await execa('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${mib}`, 'status=none']);
  await writeLinuxMbr(file, mib * 1024 * 1024);
  const server = await startThrottledFileServer(file, bytesPerSecond);
  const sha512 = (await execa('sha512sum', [file])).stdout.split(' ')[0];
  return { url: server.url.replace('image.raw', name), sha512, size: mib * 1024 * 1024, server };
}
