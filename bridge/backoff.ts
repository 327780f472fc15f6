/**
 * Waiting between attempts: the bridge's backoff, and sleeps that a shutdown cuts short (so a
 * bridge asked to stop never sits out a 30 s reconnect delay first).
 */

/** Exponential backoff from 500 ms, capped. */
export function backoffMs(attempt: number, maxMs: number): number {
  return Math.min(maxMs, 500 * 2 ** Math.min(attempt, 16));
}

/** Sleeps that end early once `stop()` is called; after it, every sleep returns at once. */
export class Sleeps {
  private stopRequested = false;
  private readonly wakers = new Set<() => void>();

  /** True once stop() was called: the owner is shutting down. */
  get stopped(): boolean {
    return this.stopRequested;
  }

  sleep(ms: number): Promise<void> {
    if (this.stopRequested) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.wakers.add(wake);
    });
  }

  /** Ends every sleep now, and every later one at once. */
  stop(): void {
    this.stopRequested = true;
    for (const wake of [...this.wakers]) wake();
  }
}
