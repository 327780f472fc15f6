/**
 * The bridge's Temporal side: whether starts can go through. A start that finds Temporal
 * unreachable, or its namespace without our search attributes, pauses consuming; the gate then
 * probes with backoff and resumes consuming by itself once Temporal is ready again.
 */
import type { Client } from '@temporalio/client';
import type { Logger } from '../core/logging.js';
import { backoffMs, type Sleeps } from './backoff.js';
import { missingSearchAttributes } from './messages.js';
import type { BridgeMetrics } from './metrics.js';

/** Why consuming is paused: Temporal does not answer, or its namespace is not set up for us. */
type PauseKind = 'unavailable' | 'misconfigured';

/** Asks the Temporal frontend whether it answers. */
async function temporalAnswers(client: Client, timeoutMs: number): Promise<boolean> {
  try {
    await client.withDeadline(Date.now() + timeoutMs, () => client.workflowService.getSystemInfo({}));
    return true;
  } catch {
    return false;
  }
}

interface TemporalGateDeps {
  client: Client;
  namespace: string;
  maxBackoffMs: number;
  log: Logger;
  metrics: BridgeMetrics;
  sleeps: Sleeps;
  /** Stops deliveries (called on pause, before the message that paused is put back). */
  stopConsuming(): Promise<void>;
  /** Starts deliveries again (called on resume). */
  resumeConsuming(): Promise<void>;
}

export class TemporalGate {
  private pausedNow = false;
  private kind: PauseKind = 'unavailable';
  /** Consecutive "Temporal unavailable" outcomes; reset only by a successful start, so a resume that fails again backs off further. */
  private unavailableStreak = 0;

  constructor(private readonly deps: TemporalGateDeps) {}

  /** True while consuming is paused because of Temporal. */
  get paused(): boolean {
    return this.pausedNow;
  }

  /** A start went through: Temporal is fine. */
  started(): void {
    this.unavailableStreak = 0;
  }

  /** Stops consuming and probes in the background until Temporal is ready again. A second pause while paused changes nothing. */
  async pause(kind: PauseKind, detail: string): Promise<void> {
    if (this.pausedNow) return;
    const { log, metrics } = this.deps;
    this.pausedNow = true;
    this.kind = kind;
    if (kind === 'unavailable') {
      this.unavailableStreak++;
      metrics.paused.set(1);
      log.warn({ detail }, 'Temporal is unavailable: paused consuming; in-flight messages go back to the queue');
    } else {
      metrics.temporalMisconfigured.set(1);
      log.error({ detail }, `stopped consuming: ${detail}. The messages stay on the queue`);
    }
    await this.deps.stopConsuming();
    void this.probeUntilReady();
  }

  /** Is Temporal ready for starts again: answering, and (after a misconfiguration) with every search attribute registered? */
  private async readyAgain(): Promise<{ ready: boolean; still?: string }> {
    const { client, namespace } = this.deps;
    if (this.kind === 'unavailable') return { ready: await temporalAnswers(client, 5000) };
    try {
      const missing = await missingSearchAttributes(client, namespace, 5000);
      return missing.length === 0 ? { ready: true } : { ready: false, still: `still missing: ${missing.join(', ')}` };
    } catch (err) {
      return { ready: false, still: `cannot list the search attributes: ${(err as Error).message}` };
    }
  }

  private async probeUntilReady(): Promise<void> {
    const { log, metrics, sleeps } = this.deps;
    const since = Date.now();
    const first = this.kind === 'unavailable' ? this.unavailableStreak - 1 : 0;
    for (let attempt = first; this.pausedNow && !sleeps.stopped; attempt++) {
      await sleeps.sleep(backoffMs(attempt + 1, this.deps.maxBackoffMs));
      if (sleeps.stopped) return;
      const { ready, still } = await this.readyAgain();
      if (ready) {
        this.pausedNow = false;
        metrics.paused.set(0);
        metrics.temporalMisconfigured.set(0);
        log.info(
          { pausedForMs: Date.now() - since },
          this.kind === 'unavailable'
            ? 'Temporal answers again: resumed consuming'
            : 'the search attributes are registered now: resumed consuming',
        );
        await this.deps.resumeConsuming();
        return;
      }
      if (this.kind === 'unavailable') log.info({ pausedForMs: Date.now() - since }, 'Temporal still unavailable');
      else
        log.error(
          { pausedForMs: Date.now() - since, detail: still },
          'still not consuming: the Temporal namespace lacks search attributes',
        );
    }
  }
}
