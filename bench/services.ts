/** Processes the system benchmarks start: a Temporal dev server, snf-vmcatcher services. */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { ResultPromise } from 'execa';
import { registrationSite } from '../clouds/index.js';
import { parseConfig } from '../core/config.js';
import { ImageEventSchema } from '../core/event.js';
import { startWorkflowForEvent } from '../core/starter.js';
import { connectTemporal } from '../core/temporal-client.js';
import type { ImageRevisionResult } from '../core/workflow-contract.js';
import { freePort } from '../test/support/bridge.js';
import { startService } from '../test/support/service-process.js';
import { startDevServer, stopDevServer, TEMPORAL_CLI, waitForDevServer } from '../test/support/temporal-server.js';
import { log, round, timed } from './lib.js';

export { freePort, TEMPORAL_CLI };

export interface Proc {
  proc: ResultPromise;
  output(): string;
  stop(): Promise<void>;
}

/** The project's Temporal dev server with our search attributes, persisting to a SQLite file in `dir`. */
export async function startTemporal(dir: string): Promise<Proc & { address: string }> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const proc = startDevServer(port, path.join(dir, 'temporal.db'));
  await waitForDevServer(address);
  log(`Temporal dev server at ${address}`);
  return { address, proc, output: () => '', stop: () => stopDevServer(proc) };
}

/** A long-running snf-vmcatcher command, ready once `ready` appears in its log. */
export async function startSnf(args: string[], env: Record<string, string>, ready: RegExp): Promise<Proc> {
  const service = await startService(args, {
    env: { SNF_VMCATCHER_LOG_LEVEL: 'info', ...env },
    readyPattern: ready,
    timeoutMs: 120_000,
  });
  return { proc: service.proc, output: service.log, stop: service.stop };
}

export interface BenchImage {
  name: string;
  size: number;
  sha512: string;
  url: string;
}

/**
 * Sends one image revision workflow per image at once (as a subscription or the queue would) to
 * the worker on `taskQueue`, and waits for them all: the wall time, and when each ended how.
 */
export async function registerAtOnce(
  temporalAddress: string,
  taskQueue: string,
  images: BenchImage[],
  label: string,
): Promise<{ ms: number; perImage: Array<{ image: string; s: number; outcome: string }> }> {
  const config = parseConfig(
    { temporal: { address: temporalAddress, taskQueue }, synnefo: { cloud: 'bench' } },
    'bench',
  );
  const { client, connection } = await connectTemporal(config.temporal);
  const perImage: Array<{ image: string; s: number; outcome: string }> = [];
  try {
    const started = Date.now();
    const { ms } = await timed(() =>
      Promise.all(
        images.map(async (img) => {
          const event = ImageEventSchema.parse({
            origin: 'command',
            imageListId: `bench-${label}-${started}`,
            imageId: img.name,
            title: img.name,
            uri: img.url,
            size: img.size,
            checksumSha512: img.sha512,
          });
          const delivered = await startWorkflowForEvent(
            client,
            config,
            event,
            { cloud: 'bench' },
            registrationSite(config),
          );
          const outcome = await delivered.handle!.result().then(
            (r) => ((r as ImageRevisionResult).register?.imageId ? 'registered' : 'not registered'),
            (err: unknown) => `failed: ${(err as Error).message}`,
          );
          const s = round((Date.now() - started) / 1000, 1);
          perImage.push({ image: img.name, s, outcome });
          log(`${label}: ${img.name} ${outcome} after ${s} s`);
        }),
      ),
    );
    return { ms, perImage };
  } finally {
    await connection.close();
  }
}
