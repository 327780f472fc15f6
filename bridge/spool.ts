import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
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
 *
 * Two users may share the folder (vmcatcher's hook writes, the bridge replays): files are made
 * group-readable whatever the umask, and the folder must be group-writable, setgid, without
 * the sticky bit (docs/image-lists.md). Renaming and deleting need write access to the
 * folder, not to the file.
 */

const SPOOL_SUFFIX = '.json';
const SPOOL_FILE_MODE = 0o640;
let sequence = 0;

function spoolFileName(now = Date.now(), pid = process.pid): string {
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
    // Not left to the umask (a hook may run with 077): whoever replays must be able to read it.
    await handle.chmod(SPOOL_FILE_MODE);
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
async function listSpool(folder: string): Promise<string[]> {
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
  /** Files this user cannot read (left in place for a user who can, and logged). */
  unreadable: number;
}

/**
 * A claim names its process by pid and by a token drawn once per process, so a claim left by
 * an earlier process that had the same pid (a container restarted with pid 1) is told apart
 * from one of this process.
 */
const PROCESS_TOKEN = randomBytes(4).toString('hex');
const CLAIM = /^(.*\.json)\.claimed-(\d+)(?:-([0-9a-f]{8}))?$/;

function claimName(file: string): string {
  return `${file}.claimed-${process.pid}-${PROCESS_TOKEN}`;
}

/** One replay at a time per folder in this process; other processes are kept off by the claims. */
const replays = new Map<string, Promise<unknown>>();

function oneAtATime<T>(folder: string, run: () => Promise<T>): Promise<T> {
  const key = path.resolve(folder);
  const previous = replays.get(key) ?? Promise.resolve();
  const next = previous.catch(() => undefined).then(run);
  const settled = next.catch(() => undefined);
  replays.set(key, settled);
  void settled.then(() => {
    if (replays.get(key) === settled) replays.delete(key);
  });
  return next;
}

/** Anything to replay: spooled files, or claims a dead process left behind. */
export async function spoolNeedsReplay(folder: string): Promise<boolean> {
  let names: string[];
  try {
    names = await readdir(folder);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return false;
    throw err;
  }
  return names.some((n) => !n.startsWith('.') && (n.endsWith(SPOOL_SUFFIX) || CLAIM.test(n)));
}

/**
 * Publishes every spooled message in arrival order and deletes each one only after the
 * broker confirmed it. Stops at the first publish failure (and rethrows it), so order is
 * kept and nothing is lost. A file that is not a valid event message is renamed `*.bad`,
 * never deleted. Each file is claimed by renaming it first, so two processes replaying at
 * once do not both publish it; within one process, replays of a folder run one at a time.
 */
export function replaySpool(
  config: Pick<Config, 'spool'>,
  publisher: Publisher,
  logger: Logger,
): Promise<ReplayResult> {
  return oneAtATime(config.spool.folder, () => replayOnce(config.spool.folder, publisher, logger));
}

async function replayOnce(folder: string, publisher: Publisher, logger: Logger): Promise<ReplayResult> {
  const result: ReplayResult = { published: 0, quarantined: 0, remaining: 0, unreadable: 0 };
  await reclaimAbandoned(folder, logger);
  const files = await listSpool(folder);
  for (let i = 0; i < files.length; i++) {
    const file = path.join(folder, files[i]);
    const claimed = claimName(file);
    try {
      await rename(file, claimed);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') continue; // another process took it
      throw await spoolAccessError(err, folder, file);
    }
    let body: Buffer;
    try {
      body = await readFile(claimed);
    } catch (err) {
      await rename(claimed, file).catch(() => undefined);
      if (!isPermissionError(err)) throw err;
      result.unreadable++;
      const owner = await stat(file)
        .then((s) => ({ uid: s.uid, gid: s.gid, mode: (s.mode & 0o7777).toString(8) }))
        .catch(() => undefined);
      logger.error(
        { file, owner, uid: process.getuid?.(), reason: (err as Error).message },
        'cannot read a spooled message: it stays in the spool for a user who can (make spool files group-readable by a group this user is in; see docs/image-lists.md)',
      );
      continue;
    }
    try {
      eventFromMessageBody(body);
    } catch (err) {
      await rename(claimed, `${file}.bad`);
      result.quarantined++;
      logger.error(
        { file: `${file}.bad`, reason: (err as Error).message },
        'spooled message is not a valid event; moved aside',
      );
      continue;
    }
    try {
      const { messageId } = await publisher.publishBody(body);
      result.published++;
      logger.info({ file, messageId }, 'spooled event published');
    } catch (err) {
      await rename(claimed, file).catch(() => undefined);
      result.remaining = files.length - i;
      logger.warn(
        { remaining: result.remaining, reason: (err as Error).message },
        'spool replay stopped; the rest stays spooled',
      );
      throw err;
    }
    await unlink(claimed).catch(async (err: unknown) => {
      // Published, but still on disk: it would be published again. Say loudly why.
      throw await spoolAccessError(err, folder, claimed);
    });
  }
  return result;
}

/**
 * A claim left by a process that died mid-replay goes back into the spool. Called while this
 * process holds the folder (oneAtATime), so a claim with this process's own token is left
 * over from an earlier replay of ours that failed half-way, and one with this pid but no or
 * another token is from an earlier process that had the same pid.
 */
async function reclaimAbandoned(folder: string, logger: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(folder);
  } catch {
    return;
  }
  for (const name of names) {
    const m = CLAIM.exec(name);
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid !== process.pid && isAlive(pid)) continue;
    try {
      await rename(path.join(folder, name), path.join(folder, m[1]));
      logger.info(
        { file: path.join(folder, m[1]), claimedBy: pid },
        'took back a spooled message an ended replay had claimed',
      );
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT')
        throw await spoolAccessError(err, folder, path.join(folder, name));
    }
  }
}

function isPermissionError(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'EACCES' || code === 'EPERM';
}

/** A rename or delete refused in the spool folder, explained: which user, which folder mode, what to change. */
async function spoolAccessError(err: unknown, folder: string, file: string): Promise<Error> {
  if (!isPermissionError(err)) return err as Error;
  const problem = await spoolFolderProblem(folder);
  return new Error(
    `cannot move ${file} in the spool folder: ${(err as Error).message}. ${problem ?? 'The replaying user must be able to rename and delete files in it.'} ` +
      'Replaying needs the spool folder writable by a group both the writing and the replaying user are in, setgid, without the sticky bit ' +
      `(e.g. chgrp snf-vmcatcher ${folder} && chmod 2770 ${folder}; see docs/image-lists.md)`,
    { cause: err },
  );
}

/** Why this process could not replay another user's files from `folder`, or undefined when it can. */
export async function spoolFolderProblem(folder: string): Promise<string | undefined> {
  let info;
  try {
    info = await stat(folder);
  } catch (err) {
    return (err as { code?: string }).code === 'ENOENT'
      ? undefined
      : `cannot stat ${folder}: ${(err as Error).message}`;
  }
  const mode = (info.mode & 0o7777).toString(8).padStart(4, '0');
  const who = `uid ${process.getuid?.()}`;
  const writable = await access(folder, constants.W_OK | constants.X_OK).then(
    () => true,
    () => false,
  );
  if (!writable)
    return `${folder} (mode ${mode}, owner ${info.uid}:${info.gid}) is not writable by this process (${who}).`;
  if (info.mode & 0o1000 && info.uid !== process.getuid?.()) {
    return `${folder} (mode ${mode}) has the sticky bit: this process (${who}) may only rename or delete the files it owns.`;
  }
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}
