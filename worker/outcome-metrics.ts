import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory, InjectedSinks } from '@temporalio/worker';
import { toActivityFailure } from './failures.js';
import type { AcquiredImage } from '../activities/types.js';
import { registrationSite } from '../clouds/index.js';
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { OUT_OF_SPACE, registrationTarget } from '../core/workflow-contract.js';
import { listSubscriptionSchedules } from '../subscriptions/schedules.js';
import type { OutcomeSinks, WorkflowOutcome } from '../workflows/outcomes.js';
import { STEP_OF_ACTIVITY, type WorkerMetricSources, type WorkerMetrics } from './metrics.js';

/**
 * The images of this host whose last step here ran out of disk space: their workflows wait
 * (stage waiting-for-disk) and try the step again. An image leaves the set when any of its
 * steps starts again here, or its slot is given back (done, failed, cancelled, gave up waiting).
 */
export class DiskWaits {
  private readonly waiting = new Set<string>();
  get size(): number {
    return this.waiting.size;
  }
  waits(workflowId: string): void {
    this.waiting.add(workflowId);
  }
  resumed(workflowId: string): void {
    this.waiting.delete(workflowId);
  }
}

/** Counts how workflows ended, from the sink the workflow interceptor (workflows/outcomes.ts) calls. */
export function outcomeSinks(
  metrics: WorkerMetrics,
  config: Pick<Config, 'cloud' | 'synnefo' | 'clouds' | 'defaultClouds'>,
): InjectedSinks<OutcomeSinks> {
  const site = registrationSite(config);
  const record = (outcome: WorkflowOutcome) => {
    switch (outcome.kind) {
      case 'registered':
        return metrics.registered.inc({ cloud: registrationTarget(outcome.options, site) });
      case 'expired':
        return metrics.expired.inc({ cloud: registrationTarget(outcome.options, site) });
      case 'failed':
        return metrics.failed.inc({
          cloud: registrationTarget(outcome.options, site),
          action: outcome.action,
          kind: outcome.failure,
        });
      case 'synced':
        return metrics.syncs.inc({ subscription: outcome.subscription, outcome: outcome.outcome });
    }
  };
  // Not during replay (the default): a workflow replayed after a restart or a cache eviction was counted when it ran.
  return { outcomes: { record: { fn: (_info, outcome) => record(outcome) } } };
}

/**
 * Measures every attempt of a file step (its duration, the bytes a download brought) and notes
 * the images waiting for disk space. Per attempt on purpose: a retried download took the time and
 * moved the bytes again. Images are counted once by their workflow's end (outcomeSinks), not here.
 */
export function measureSteps(metrics: WorkerMetrics, diskWaits: DiskWaits): ActivityInterceptorsFactory {
  return (ctx: Context) => ({
    inbound: {
      async execute(input, next) {
        const { activityType, workflowExecution } = ctx.info;
        const workflowId = workflowExecution?.workflowId;
        if (workflowId) diskWaits.resumed(workflowId);
        const step = STEP_OF_ACTIVITY[activityType];
        const end = step ? metrics.stepDuration.startTimer({ step }) : undefined;
        try {
          const result = await next(input);
          end?.({ outcome: 'completed' });
          if (activityType === 'acquireImage' && (result as AcquiredImage).source === 'download')
            metrics.downloadedBytes.inc((result as AcquiredImage).bytes);
          return result;
        } catch (err) {
          const cancelled = err instanceof CancelledFailure;
          end?.({ outcome: cancelled ? 'cancelled' : 'failed' });
          // The workflow waits for space and tries the step again (workflows/register-image.ts withDiskWait).
          const failure = cancelled ? undefined : toActivityFailure(err);
          if (workflowId && failure instanceof ApplicationFailure && failure.type === OUT_OF_SPACE)
            diskWaits.waits(workflowId);
          throw err;
        }
      },
    },
  });
}

/**
 * The subscriptions' state as Temporal keeps it, for the gauges computed when Prometheus scrapes:
 * every subscription schedule's interval, and the close time of its last completed run. Read at
 * most once per `cacheMs`; when Temporal does not answer, the last answer stands (and is logged).
 */
export function subscriptionsInTemporal(
  client: () => Promise<Client>,
  logger: Logger,
  cacheMs = 15_000,
): WorkerMetricSources['subscriptions'] {
  let last: Awaited<ReturnType<WorkerMetricSources['subscriptions']>> = [];
  let readAt = 0;
  let reading: Promise<typeof last> | undefined;
  const read = async () => {
    const c = await client();
    const found = [];
    for (const { scheduleId, spec, description } of await listSubscriptionSchedules(c)) {
      let lastSuccess: Date | undefined;
      const query = `TemporalScheduledById = '${scheduleId}' AND ExecutionStatus = 'Completed'`;
      let seen = 0;
      // Newest first; a few, in case a visibility store orders by start time rather than close time.
      for await (const run of c.workflow.list({ query, pageSize: 10 })) {
        if (run.closeTime && (!lastSuccess || run.closeTime > lastSuccess)) lastSuccess = run.closeTime;
        if (++seen >= 10) break;
      }
      found.push({
        subscription: spec.url,
        intervalSeconds: spec.everyMs / 1000,
        createdAt: description.info.createdAt,
        lastSuccess,
      });
    }
    return found;
  };
  return async () => {
    if (Date.now() - readAt < cacheMs) return last;
    reading ??= read()
      .then((found) => {
        last = found;
        readAt = Date.now();
        return found;
      })
      .catch((err: unknown) => {
        logger.warn({ err: String(err) }, 'could not read the subscriptions from Temporal for the metrics');
        return last;
      })
      .finally(() => (reading = undefined));
    return reading;
  };
}
