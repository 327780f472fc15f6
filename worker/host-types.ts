/** What `claimHost` tells a workflow about the worker that will run its file-bound steps. */
export interface HostClaim {
  /** The worker's own task queue: every step that touches the image file runs there. */
  taskQueue: string;
  hostname: string;
  /** Timeouts and retries come from the worker's configuration, so sites (and tests) tune them without code. */
  heartbeatTimeoutMs: number;
  downloadTimeoutMs: number;
  toolTimeoutMs: number;
  /** How long a host-queue step may wait for its worker before the workflow moves to another host. */
  scheduleToStartTimeoutMs: number;
  retryInitialIntervalMs: number;
  retryMaximumIntervalMs: number;
  retryMaximumAttempts: number;
}
