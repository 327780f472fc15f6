import {
  ActivityFailure,
  ApplicationFailure,
  ChildWorkflowFailure,
  ContinueAsNew,
  isCancellation,
  proxySinks,
  TimeoutFailure,
  workflowInfo,
  type Sinks,
  type WorkflowInterceptorsFactory,
} from '@temporalio/workflow';
import {
  EXPIRE_WORKFLOW,
  LIST_REJECTED,
  REGISTER_WORKFLOW,
  SYNC_WORKFLOW,
  type ImageRequest,
  type RegistrationOptions,
  type SyncImageListInput,
  type SyncImageListResult,
} from '../core/workflow-contract.js';

/** The step whose completion means this registration put the image on the cloud. */
const PUBLISH_ACTIVITY = 'registerWithKamaki';

/** How a subscription's sync ended: the list changed or not (then reconciled), refused (bad signature, wrong list), or failed. */
type SyncOutcome = 'changed' | 'not-modified' | 'refused' | 'failed';

/** What the worker counts when a workflow ends (worker/outcome-metrics.ts). */
export type WorkflowOutcome =
  | { kind: 'registered'; options: RegistrationOptions }
  | { kind: 'expired'; options: RegistrationOptions }
  | { kind: 'failed'; action: 'register' | 'expire'; options: RegistrationOptions; failure: string }
  | { kind: 'synced'; subscription: string; outcome: SyncOutcome };

export interface OutcomeSinks extends Sinks {
  outcomes: { record(outcome: WorkflowOutcome): void };
}

/**
 * The kind of a failure, as the metrics and the operator name it: the failure type the worker's
 * interceptor gave the step's error (worker/failures.ts, the error's class or system code), or
 * the workflow's own (HandlerBug, OutOfSpace after the disk wait); a timeout by its type.
 */
function failureKind(err: unknown): string {
  let e: unknown = err;
  while ((e instanceof ActivityFailure || e instanceof ChildWorkflowFailure) && e.cause) e = e.cause;
  if (e instanceof ApplicationFailure) return e.type || 'Error';
  if (e instanceof TimeoutFailure) return `Timeout-${e.timeoutType ?? 'unknown'}`;
  return e instanceof Error ? e.name : 'Error';
}

/**
 * Reports how each registration, expiry and subscription sync ended, once, when its workflow ends.
 * Through a sink, which the SDK does not call while it replays a history: a worker that restarts,
 * or evicts the workflow from its cache, does not count it again. Activity retries do not show
 * here at all, only the workflow's final result: an image is counted registered when its workflow
 * completes after its publish step did, failed when its workflow fails for good.
 */
export const interceptors: WorkflowInterceptorsFactory = () => {
  const { outcomes } = proxySinks<OutcomeSinks>();
  let published = false;
  return {
    outbound: [
      {
        async scheduleActivity(input, next) {
          const result = await next(input);
          if (input.activityType === PUBLISH_ACTIVITY) published = true;
          return result;
        },
      },
    ],
    inbound: [
      {
        async execute(input, next) {
          const type = workflowInfo().workflowType;
          const arg = input.args[0];
          try {
            const result = await next(input);
            if (type === REGISTER_WORKFLOW && published)
              outcomes.record({ kind: 'registered', options: (arg as ImageRequest).options });
            if (type === EXPIRE_WORKFLOW) outcomes.record({ kind: 'expired', options: (arg as ImageRequest).options });
            if (type === SYNC_WORKFLOW)
              outcomes.record({
                kind: 'synced',
                subscription: (arg as SyncImageListInput).subscription.url,
                outcome: (result as SyncImageListResult).summary.fetched,
              });
            return result;
          } catch (err) {
            // A cancelled registration (an expiry replaced it) or a continued run did not fail.
            if (isCancellation(err) || err instanceof ContinueAsNew) throw err;
            const failure = failureKind(err);
            if (type === REGISTER_WORKFLOW || type === EXPIRE_WORKFLOW)
              outcomes.record({
                kind: 'failed',
                action: type === REGISTER_WORKFLOW ? 'register' : 'expire',
                options: (arg as ImageRequest).options,
                failure,
              });
            if (type === SYNC_WORKFLOW)
              outcomes.record({
                kind: 'synced',
                subscription: (arg as SyncImageListInput).subscription.url,
                outcome: failure === LIST_REJECTED ? 'refused' : 'failed',
              });
            throw err;
          }
        },
      },
    ],
  };
};
