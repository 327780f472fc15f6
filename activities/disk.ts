import { statfs } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { OutOfSpaceError } from '../core/errors.js';

/** Space held back on the working folder's filesystem: what the host's other users keep. */
export interface DiskPolicy {
  reserveBytes: number;
  reservePercent: number;
}

export function diskPolicy(config: Config): DiskPolicy {
  return { reserveBytes: config.worker.diskReserveBytes, reservePercent: config.worker.diskReservePercent };
}

interface FilesystemSpace {
  /** Bytes an unprivileged writer may still use. */
  free: number;
  /** Size of the filesystem. */
  total: number;
}

export async function filesystemSpace(dir: string): Promise<FilesystemSpace> {
  const fs = await statfs(dir);
  return { free: fs.bavail * fs.bsize, total: fs.blocks * fs.bsize };
}

/** Bytes kept free on a filesystem of `total` bytes. */
export function reserveOf(policy: DiskPolicy, total: number): number {
  return Math.max(policy.reserveBytes, Math.ceil((total * policy.reservePercent) / 100));
}

/** What a single image may ever occupy on the filesystem of `dir`: its size less the reserve. */
export async function usableCapacity(dir: string, policy: DiskPolicy): Promise<number> {
  const { total } = await filesystemSpace(dir);
  return Math.max(0, total - reserveOf(policy, total));
}

/**
 * Space promised to steps running in this process that have not written it yet. Several images
 * on one host check free space at the same moment; without this, each sees the same free bytes
 * and together they fill the disk.
 */
const promised = new Map<string, number>();

/** Frees space held only in case it is needed again; true when it freed some. */
let reclaimer: (() => Promise<boolean>) | undefined;

/** What reserveSpace runs before it refuses a step for want of space (one per process: the worker's). */
export function onShortOfSpace(reclaim: () => Promise<boolean>): void {
  reclaimer = reclaim;
}

export interface SpaceReservation {
  readonly bytes: number;
  /** Gives the promise back (the step wrote its file, or failed). Idempotent. */
  release(): void;
}

/**
 * Checks that `bytes` more can be written under `dir` while keeping the reserve free, counting
 * what other running steps of this worker have been promised, and promises them to the caller.
 * Throws OutOfSpaceError naming what is needed and what is free: `canEverFit` is false when the
 * filesystem could not hold this much even empty.
 */
export async function reserveSpace(
  dir: string,
  bytes: number,
  what: string,
  policy: DiskPolicy,
): Promise<SpaceReservation> {
  const key = path.resolve(dir);
  const measure = async () => {
    const { free, total } = await filesystemSpace(key);
    const reserve = reserveOf(policy, total);
    const others = [...promised.values()].reduce((a, b) => a + b, 0);
    return { free, total, reserve, others, available: Math.max(0, free - reserve - others) };
  };
  let space = await measure();
  // Files kept only in case they are needed again (verified-files.ts) give their space back first.
  if (bytes > space.available && reclaimer && (await reclaimer().catch(() => false))) space = await measure();
  const { free, total, reserve, others, available } = space;
  if (bytes > available) {
    const capacity = Math.max(0, total - reserve);
    const canEverFit = bytes <= capacity;
    const held = others ? `, ${others} promised to other images' running steps` : '';
    throw new OutOfSpaceError(
      canEverFit
        ? `not enough disk space in ${key} for ${what}: need ${bytes} bytes, ${free} free (keeping ${reserve} in reserve${held})`
        : `${what} needs ${bytes} bytes, but the filesystem of ${key} holds at most ${capacity} (${total} less a reserve of ${reserve}): it can never fit there`,
      { neededBytes: bytes, freeBytes: free, canEverFit },
    );
  }
  const id = `${key}\0${Math.random()}`;
  promised.set(id, bytes);
  let released = false;
  return {
    bytes,
    release() {
      if (released) return;
      released = true;
      promised.delete(id);
    },
  };
}

/** ENOSPC (or EDQUOT) from a write becomes OutOfSpaceError; anything else passes unchanged. */
export function asOutOfSpace(err: unknown, dir: string, what: string, neededBytes = 0): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return err;
  return new OutOfSpaceError(`the disk of ${dir} filled up while writing ${what} (${code})`, {
    neededBytes,
    freeBytes: 0,
    canEverFit: true,
    cause: err,
  });
}
