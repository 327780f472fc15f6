import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { eventFromMessageBody } from '../core/event.js';
import type { Logger } from '../core/logging.js';
import type { Publisher } from './publisher.js';

/**
 * vmcatcher never re-sends an event, so when the broker is away the producer keeps the
 * message on disk and every later producer run (and the bridge on start) publishes it
 * first. A spool file is a message body exactly as it would have been published.
 *
 * File names sort by arrival: a zero-padded millisecond clock, then a per-process sequence,
 * then pid and randomness against collisions between processes.
 */

const SPOOL_SUFFIX = '.json';
let sequence = 0;

export function spoolFileName(now = Date.now(), pid = process.pid): string {
  sequence = (sequence + 1) % 1_000_000;
  const stamp = String(now).padStart(15, '0');
  return `${stamp}-${String(sequence).padStart(6, '0')}-${pid}-${randomBytes(3).toString('hex')}${SPOOL_SUFFIX}`;
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes a message durably: temp file, fsync, rename, fsync the folder. Returns the path. */
export async function spoolMessage(folder: string, body: Buffer): Promise<string> {
  await mkdir(folder, { recursive: true, mode: 0o750 });
  const name = spoolFileName();
  const temp = path.join(folder, `.${name}.tmp`);
  const handle = await open(temp, 'wx', 0o640);
  try {
    await handle.writeFile(body);
    await handle.sync();
  } finally {
    await handle.close();
  }
  const final = path.join(folder, name);
  await rename(temp, final);
  await fsyncDir(folder);
  return final;
}

/** Spooled messages waiting to be published, oldest first. */
export async function listSpool(folder: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(folder);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return [];
    throw err;
  }
  return names.filter((n) => n.endsWith(SPOOL_SUFFIX) && !n.startsWith('.')).sort();
}

export interface ReplayResult {
  published: number;
  /** Files moved aside as `*.bad` because they were not a valid event message. */
  quarantined: number;
  /** Files left for the next run because publishing failed. */
  remaining: number;
}

/**
 * Publishes every spooled message in arrival order and deletes each one only after the
 * broker confirmed it. Stops at the first publish failure (and rethrows it), so order is
 * kept and nothing is lost. A file that is not a valid event message is renamed `*.bad`,
 * never deleted. Each file is claimed by renaming it first, so two producers replaying
 * at once do not both publish it.
 */
export async function replaySpool(config: Pick<Config, 'spool'>, publisher: Publisher, logger: Logger): Promise<ReplayResult> {
  const folder = config.spool.folder;
  const result: ReplayResult = { published: 0, quarantined: 0, remaining: 0 };
  await reclaimAbandoned(folder);
  const files = await listSpool(folder);
  for (let i = 0; i < files.length; i++) {
    const file = path.join(folder, files[i]);
    const claimed = `${file}.claimed-${process.pid}`;
    try {
      await rename(file, claimed);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') continue; // another producer took it
      throw err;
    }
    const body = await readFile(claimed);
    try {
      eventFromMessageBody(body);
    } catch (err) {
      await rename(claimed, `${file}.bad`);
      result.quarantined++;
      logger.error({ file: `${file}.bad`, reason: (err as Error).message }, 'spooled message is not a valid event; moved aside');
      continue;
    }
    try {
      const { messageId } = await publisher.publishBody(body);
      await unlink(claimed);
      result.published++;
      logger.info({ file, messageId }, 'spooled event published');
    } catch (err) {
      await rename(claimed, file).catch(() => undefined);
      result.remaining = files.length - i;
      logger.warn({ remaining: result.remaining, reason: (err as Error).message }, 'spool replay stopped; the rest stays spooled');
      throw err;
    }
  }
  return result;
}

/** A claim left by a process that died mid-replay goes back into the spool. */
async function reclaimAbandoned(folder: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(folder);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^(.*\.json)\.claimed-(\d+)$/.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid !== process.pid && isAlive(pid)) continue;
    await rename(path.join(folder, name), path.join(folder, m[1])).catch(() => undefined);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}
