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
  /** The image revision it registers (its checksum), when slots are shared by revision. */
  group?: string;
  grant: () => void;
}

interface SlotState {
  capacity: number;
  holders: string[];
  waiting: string[];
}

export class HostSlots implements SlotKeeper {
  /** Each holder and the revision it shares its slot with (none: a slot of its own). */
  private readonly holders = new Map<string, { since: number; group?: string }>();
  private readonly waiters: SlotWaiter[] = [];
  /** New requests are not granted before this time: see `holdBackUntil`. */
  private notBefore = 0;
  private timer?: NodeJS.Timeout;

  /**
   * `shareByRevision`: in a deployment of several clouds, the registrations of one image revision
   * into each cloud share one slot (they share its download and conversion, verified-files.ts): a
   * registration of a revision that holds a slot here gets in at once, so it never holds a second
   * slot while it waits for the first one's download.
   */
  constructor(
    readonly capacity: number,
    private readonly shareByRevision = false,
  ) {}

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
  acquire(workflowId: string, signal?: AbortSignal, revision?: string): Promise<void> {
    if (this.holders.has(workflowId)) return Promise.resolve();
    const group = this.shareByRevision ? revision : undefined;
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
        group,
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
    this.holders.set(workflowId, { since: Date.now() });
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
    // A waiter whose revision holds a slot joins it, wherever it is in the queue.
    for (const waiter of [...this.waiters]) {
      if (waiter.group === undefined || !this.heldGroups().has(waiter.group)) continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      this.holders.set(waiter.workflowId, { since: Date.now(), group: waiter.group });
      waiter.grant();
    }
    while (this.slotsTaken() < this.capacity && this.waiters.length) {
      const next = this.waiters.shift()!;
      this.holders.set(next.workflowId, { since: Date.now(), group: next.group });
      next.grant();
      // The rest of its revision comes in with it.
      if (next.group !== undefined) this.grantFree();
    }
  }

  private heldGroups(): Set<string> {
    return new Set([...this.holders.values()].flatMap((h) => (h.group === undefined ? [] : [h.group])));
  }

  /** Slots in use: one per holder of its own, one per revision shared. */
  private slotsTaken(): number {
    let own = 0;
    for (const h of this.holders.values()) if (h.group === undefined) own++;
    return own + this.heldGroups().size;
  }
}
