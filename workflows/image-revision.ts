import {
  CancellationScope,
  ChildWorkflowCancellationType,
  condition,
  defineQuery,
  defineSignal,
  isCancellation,
  log,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import {
  childWorkflowId,
  CURRENT_QUERY,
  EXPIRE_WORKFLOW,
  IMAGE_EVENT_SIGNAL,
  imageDetails,
  imageSearchAttributes,
  imageSummary,
  REGISTER_WORKFLOW,
  SA_STAGE,
  type CurrentChild,
  type ExpireImageResult,
  type ImageEventSignal,
  type ImageRevisionResult,
  type RegisterImageResult,
} from '../core/workflow-contract.js';

/** The stage of an image revision's workflow once a child does the work (not a registration stage). */
const DELEGATED_STAGE = 'delegated';

export const imageEventSignal = defineSignal<[ImageEventSignal]>(IMAGE_EVENT_SIGNAL);
export const currentQuery = defineQuery<CurrentChild | undefined>(CURRENT_QUERY);

/**
 * The coordinator of one image revision on one target. Every event for the revision reaches it
 * (the bridge and the CLI signal-with-start it), and it runs the registration or the expiry as a
 * child workflow, one at a time, so that the cloud ends up as the LAST event says, whatever the
 * order in which downloads, registrations and expiries would otherwise finish:
 * - an Expire arriving while the registration runs (or waits for a host) cancels it, then expires
 *   whatever it may already have registered;
 * - an Available arriving while the expiry runs registers (or makes public again) once it ends;
 * - a repeated event of the action in progress changes nothing.
 * Once done it completes; a later event starts a new run (an image renewed after a lapse is made
 * public again, an image deleted by hand is registered again).
 */
export async function imageRevision(): Promise<ImageRevisionResult> {
  let latest: ImageEventSignal | undefined;
  let generation = 0;
  let running: { action: ImageEventSignal['action']; scope: CancellationScope } | undefined;
  let current: CurrentChild | undefined;

  setHandler(imageEventSignal, (signal) => {
    if (latest?.action === signal.action) return;
    latest = signal;
    generation++;
    // Stop a registration the newer event undoes; let an expiry finish (it is short), then register.
    if (running?.action === 'register' && signal.action === 'expire') running.scope.cancel();
  });
  setHandler(currentQuery, () => current);

  await condition(() => latest !== undefined);
  const result: ImageRevisionResult = { action: latest!.action };
  for (;;) {
    const want = latest!;
    const mine = generation;
    const scope = new CancellationScope();
    running = { action: want.action, scope };
    try {
      await scope.run(async () => {
        const child = await startChild(want.action === 'register' ? REGISTER_WORKFLOW : EXPIRE_WORKFLOW, {
          workflowId: childWorkflowId(want.event, want.action, want.target),
          args: [{ event: want.event, options: want.options }],
          taskQueue: workflowInfo().taskQueue,
          // The cancelled registration's clean-up ends before the expiry looks at the cloud.
          cancellationType: ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
          workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
          typedSearchAttributes: imageSearchAttributes(
            want.event,
            want.action === 'register' ? 'queued' : 'expiring',
            want.target,
          ),
          staticSummary: imageSummary(want.action, want.event, want.target),
          staticDetails: imageDetails(want.event, want.target, want.options),
          memo: { title: want.event.title ?? '', version: want.event.version ?? '', origin: want.event.origin },
        });
        current = { action: want.action, workflowId: child.workflowId, runId: child.firstExecutionRunId };
        // From now on the child shows the stage; `registrations` lists this workflow only while queued.
        upsertSearchAttributes([{ key: SA_STAGE, value: DELEGATED_STAGE }]);
        const outcome = await child.result();
        if (want.action === 'register') result.register = outcome as RegisterImageResult;
        else result.expire = outcome as ExpireImageResult;
      });
    } catch (err) {
      if (generation === mine) throw err;
      // A newer event superseded this one (cancelled, or it failed on the way): act on the newer one.
      if (!isCancellation(err))
        log.warn('the superseded action failed; going on with the newer event', { error: String(err) });
    } finally {
      running = undefined;
    }
    if (generation === mine) {
      result.action = want.action;
      return result;
    }
  }
}
