import type { SlotKeeper } from '../activities/control.js';

/**
 * A host's slots: how many images run their file-bound sequence on this worker at once.
 *
 * A registration takes a slot before its first file step and keeps it to the end, so a host with
 * a backlog works through whole images (one download, convert and upload after another) instead
 * of interleaving every queued image's downloads and filling its disk, and a step of an image
 * that holds a slot never waits behind other images' steps. Waiting for a slot is an activity on
 * the host's control queue, whose worker never runs out of task slots: a slot request that is not
 * even picked up means the host is gone, however long the queue of images waiting for a slot.
 */
interface SlotWaiter {
  workflowId: string;
  grant: () => void;
}

interface SlotState {
  capacity: number;
  holders: string[];
  waiting: string[];
}

export class HostSlots implements SlotKeeper {
  private readonly holders = new Map<string, number>();
  private readonly waiters: SlotWaiter[] = [];
  /** New requests are not granted before this time: see `holdBackUntil`. */
  private notBefore = 0;
  private timer?: NodeJS.Timeout;

  constructor(readonly capacity: number) {}

  /**
   * After a restart this worker has forgotten which images held its slots, while their next steps
   * are about to arrive. Granting nothing new for a while lets them come back (adopt) first.
   */
  holdBackUntil(time: number): void {
    this.notBefore = time;
  }

  state(): SlotState {
    return {
      capacity: this.capacity,
      holders: [...this.holders.keys()],
      waiting: this.waiters.map((w) => w.workflowId),
    };
  }

  /** The position of a waiting image (1 = next), 0 when it holds a slot, -1 when unknown. */
  position(workflowId: string): number {
    if (this.holders.has(workflowId)) return 0;
    const index = this.waiters.findIndex((w) => w.workflowId === workflowId);
    return index < 0 ? -1 : index + 1;
  }

  /** Resolves when `workflowId` holds a slot (at once if it already does); rejects when `signal` aborts. */
  acquire(workflowId: string, signal?: AbortSignal): Promise<void> {
    if (this.holders.has(workflowId)) return Promise.resolve();
    // A retried request replaces the request of the attempt before it, keeping its place.
    const existing = this.waiters.find((w) => w.workflowId === workflowId);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(signal?.reason ?? new Error('slot request cancelled'));
      };
      const waiter: SlotWaiter = {
        workflowId,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (existing) this.waiters.splice(this.waiters.indexOf(existing), 1, waiter);
      else this.waiters.push(waiter);
      this.grantFree();
    });
  }

  /** A step of an image that held a slot before this worker restarted: it holds one again. */
  adopt(workflowId: string): void {
    if (this.holders.has(workflowId)) return;
    const index = this.waiters.findIndex((w) => w.workflowId === workflowId);
    if (index >= 0) this.waiters.splice(index, 1)[0].grant();
    this.holders.set(workflowId, Date.now());
  }

  release(workflowId: string): boolean {
    const held = this.holders.delete(workflowId);
    this.grantFree();
    return held;
  }

  private grantFree(): void {
    const wait = this.notBefore - Date.now();
    if (wait > 0) {
      if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.grantFree();
        }, wait);
        this.timer.unref();
      }
      return;
    }
    while (this.holders.size < this.capacity && this.waiters.length) {
      const next = this.waiters.shift()!;
      this.holders.set(next.workflowId, Date.now());
      next.grant();
    }
  }
}
