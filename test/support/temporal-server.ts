import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { SEARCH_ATTRIBUTES } from '../../core/workflow-contract.js';
import { ROOT } from './cli.js';

export const TEMPORAL_CLI = process.env.SNF_VMCATCHER_TEMPORAL_CLI ?? path.join(ROOT, '.tools/bin/temporal');

/**
 * A Temporal dev server of its own (for a test that must stop it, or a benchmark), headless
 * unless given a `uiPort` for its Web UI, with the project's search attributes (unless told not
 * to), persisting to a SQLite file that survives restarts.
 */
export function startDevServer(
  port: number,
  dbFile: string,
  opts: { searchAttributes?: boolean; uiPort?: number } = {},
): ResultPromise {
  // Without them (searchAttributes: false): a namespace an operator forgot to set up.
  const attributes =
    opts.searchAttributes === false
      ? []
      : SEARCH_ATTRIBUTES.flatMap(({ name, type }) => ['--search-attribute', `${name}=${type}`]);
  const ui = opts.uiPort === undefined ? ['--headless'] : ['--ui-ip', '127.0.0.1', '--ui-port', String(opts.uiPort)];
  return execa(
    TEMPORAL_CLI,
    [
      'server',
      'start-dev',
      ...ui,
      '--ip',
      '127.0.0.1',
      '--port',
      String(port),
      '--db-filename',
      dbFile,
      ...attributes,
      '--log-level',
      'warn',
    ],
    { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' },
  );
}

/** Resolves once the server at `address` answers a health check (or throws after `timeoutMs`). */
export async function waitForDevServer(address: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const health = await execa(TEMPORAL_CLI, ['operator', 'cluster', 'health', '--address', address], {
      reject: false,
    });
    if (health.exitCode === 0) return;
    if (Date.now() > deadline) throw new Error(`Temporal dev server at ${address} did not come up: ${health.stderr}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function stopDevServer(server: ResultPromise | undefined): Promise<void> {
  if (!server || server.exitCode !== null) return;
  server.kill('SIGTERM');
  await server;
}
