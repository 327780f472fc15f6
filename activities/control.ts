import { Context } from '@temporalio/activity';
import { keepHeartbeating } from '../runtime/heartbeats.js';

/** What the control activities need of a host's slots (the worker keeps them: worker/host-slots.ts). */
export interface SlotKeeper {
  /** Resolves when `workflowId` holds a slot (shared with `revision`'s other registrations, where slots are); rejects when `signal` aborts. */
  acquire(workflowId: string, signal?: AbortSignal, revision?: string): Promise<void>;
  release(workflowId: string): void;
  /** 1 = next, 0 = holds a slot, -1 = unknown. */
  position(workflowId: string): number;
  state(): { capacity: number; holders: string[]; waiting: string[] };
}

/**
 * The activities of a host's control queue. Its worker has far more task slots than images, so
 * they start at once on a live host, whatever the host is busy with.
 */
export function createControlActivities({ slots }: { slots: SlotKeeper }) {
  return {
    /** Waits (heartbeating its place in the queue) until this image holds one of the host's slots. */
    async acquireHostSlot({ workflowId, revision }: { workflowId: string; revision?: string }): Promise<void> {
      const signal = Context.current().cancellationSignal;
      // Counts, not the ids: a long queue must not make every heartbeat large.
      const stop = keepHeartbeating(() => {
        const { capacity, holders, waiting } = slots.state();
        return {
          step: 'waiting for a slot on this host',
          position: slots.position(workflowId),
          capacity,
          holders: holders.length,
          waiting: waiting.length,
        };
      });
      try {
        await slots.acquire(workflowId, signal, revision);
      } finally {
        stop();
      }
    },

    async releaseHostSlot({ workflowId }: { workflowId: string }): Promise<void> {
      slots.release(workflowId);
    },
  };
}

export type ControlActivities = ReturnType<typeof createControlActivities>;
