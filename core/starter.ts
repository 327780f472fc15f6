import type { Client, WorkflowHandle, WorkflowHandleWithSignaledRunId } from '@temporalio/client';
import {
  defaultPayloadConverter,
  TypedSearchAttributes,
  WorkflowIdConflictPolicy,
  WorkflowIdReusePolicy,
} from '@temporalio/common';
import type { Config } from './config.js';
import { assertActionable, eventAction, InvalidEventError, type ImageEvent } from './event.js';
import {
  childWorkflowId,
  chosenCloud,
  EXPIRE_WORKFLOW,
  IMAGE_EVENT_SIGNAL,
  IMAGE_REVISION_WORKFLOW,
  imageDetails,
  imageRevisionWorkflowId,
  imageSearchAttributes,
  imageSummary,
  REGISTER_WORKFLOW,
  SA_CLOUD,
  registrationTarget,
  type ImageEventSignal,
  type ImageRequest,
  type RegistrationOptions,
  type RegistrationSite,
} from './workflow-contract.js';

type StartOutcome =
  /** The event reached its image revision's workflow (started for it, or already running). */
  | 'delivered'
  /** The event needs no action (e.g. ProcessPrefix). */
  | 'ignored';

export interface StartResult {
  outcome: StartOutcome;
  /** The image revision's workflow, which the event was delivered to. */
  workflowId?: string;
  /** The workflow that does the work the event asks for: registerImage or expireImage. */
  childWorkflowId?: string;
  childWorkflowType?: string;
  handle?: WorkflowHandle;
  /**
   * Every registration the event was delivered to, one per cloud in a deployment of several (the
   * fields above are the first's); absent on a site of one cloud.
   */
  deliveries?: StartResult[];
}

/**
 * Delivers an event to the workflow of its image revision and target (signal-with-start): it
 * starts one when none runs, and otherwise the running one takes the event into account. That
 * workflow runs registerImage or expireImage, so a repeated event never registers an image twice
 * and the cloud follows the last event of the revision.
 *
 * `site` is the worker's cloud as clouds/index.ts `registrationSite` reads it from the configuration:
 * with the options, it names the registration's target, part of every workflow id.
 *
 * Throws InvalidEventError when the event lacks what its action needs.
 */
export async function startWorkflowForEvent(
  client: Client,
  config: Config,
  event: ImageEvent,
  options: RegistrationOptions,
  site: RegistrationSite,
): Promise<StartResult> {
  const kind = eventAction(event);
  if (kind === 'ignore') return { outcome: 'ignored' };
  assertActionable(event);
  const action = kind === 'register' ? 'register' : 'expire';
  const deliveries: StartResult[] = [];
  for (const each of cloudsOf(event, options, site)) {
    const target = registrationTarget(each, site);
    const workflowId = imageRevisionWorkflowId(event, action, target);
    const signal: ImageEventSignal = { action, event, options: each, target };
    const handle = await deliverToRevision(client, config.temporal.taskQueue, workflowId, signal);
    deliveries.push({
      outcome: 'delivered',
      workflowId,
      childWorkflowId: childWorkflowId(event, action, target),
      childWorkflowType: action === 'register' ? REGISTER_WORKFLOW : EXPIRE_WORKFLOW,
      handle,
    });
  }
  if (deliveries.length === 0) return { outcome: 'ignored', deliveries };
  return { ...deliveries[0], deliveries };
}

/**
 * The options of each registration an event makes: itself on a site of one cloud; in a deployment
 * of several, one per cloud it goes to (the one it names, else `defaultClouds`), each naming its
 * cloud, without the clouds whose `vos` leave the event's VO out. An event naming a cloud the
 * deployment does not have is refused (InvalidEventError): it is dead-lettered, not lost.
 */
export function cloudsOf(
  event: Pick<ImageEvent, 'vo'>,
  options: RegistrationOptions,
  site: RegistrationSite,
  /** Where an event naming no cloud goes, when not `defaultClouds` (a subscription's `clouds`). */
  names?: readonly string[],
): RegistrationOptions[] {
  if (!site.clouds || (options.handler !== undefined && options.handler !== 'registerImage')) return [options];
  const clouds = site.clouds;
  const named = chosenCloud(options);
  if (named !== undefined && !(named in clouds)) {
    throw new InvalidEventError(
      `cloud '${named}' is not one of the configured clouds (${Object.keys(clouds).join(', ')})`,
      'invalid-value',
      'cloud',
    );
  }
  const takes = (name: string) => {
    const vos = clouds[name].vos;
    return vos === undefined || (event.vo !== undefined && vos.includes(event.vo));
  };
  const { kamakiCloud: _old, ...rest } = options;
  return (named !== undefined ? [named] : (names ?? site.defaultClouds ?? Object.keys(clouds)))
    .filter(takes)
    .map((cloud) => ({ ...rest, cloud }));
}

/**
 * Signal-with-start of an image revision's workflow: starts a run when none runs (a closed run's id
 * may run again), otherwise the running one takes the signal. What an event and a restart share.
 */
async function deliverToRevision(
  client: Client,
  taskQueue: string,
  workflowId: string,
  signal: ImageEventSignal,
): Promise<WorkflowHandleWithSignaledRunId> {
  const { event, target, options } = signal;
  return client.workflow.signalWithStart(IMAGE_REVISION_WORKFLOW, {
    taskQueue,
    workflowId,
    args: [],
    signal: IMAGE_EVENT_SIGNAL,
    signalArgs: [signal],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    typedSearchAttributes: new TypedSearchAttributes(imageSearchAttributes(event, 'queued', target)),
    // The Web UI's User Metadata: which image this is, without opening the input.
    staticSummary: imageSummary('revision', event, target),
    staticDetails: imageDetails(event, target, options),
    memo: { title: event.title ?? '', version: event.version ?? '', origin: event.origin },
  });
}

// ---------------------------------------------------------------------------------------
// Starting a failed registration again (`registrations retry`)

/** The closed states a registration is started again from. A cancelled one was undone by a later event: never. */
const RESTARTABLE_STATUSES = ['FAILED', 'TERMINATED', 'TIMED_OUT'] as const;

/** One failed workflow that `registrations retry` considers: a registration, an expiry, or a revision still queued. */
export interface FailedWorkflow {
  workflowId: string;
  runId: string;
  type: string;
  taskQueue: string;
  /** The image revision's workflow that ran it, when one did. */
  parent?: { workflowId: string };
}

type RestartPlan =
  /** Signal-with-start the image revision's workflow again with the event it handled last. */
  | { how: 'revision'; workflowId: string; taskQueue: string; signal: ImageEventSignal; restarts: string }
  /** A registration started without a revision workflow: start its id again with its own input. */
  | {
      how: 'direct';
      workflowId: string;
      type: string;
      taskQueue: string;
      input: ImageRequest;
      restarts: string;
      /** The failed run's `ImageCloud`, which its input does not hold. */
      target?: string;
    }
  | { how: 'skip'; workflowId: string; why: string };

function isRestartable(status: string): boolean {
  return (RESTARTABLE_STATUSES as readonly string[]).includes(status);
}

/** The payloads of the history events of one run: the start input and every image event signal, in order. */
async function runInputs(
  client: Client,
  workflowId: string,
  runId: string,
): Promise<{ input?: unknown; signals: ImageEventSignal[] }> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const decode = (payload: unknown) => defaultPayloadConverter.fromPayload(payload as never);
  let input: unknown;
  const signals: ImageEventSignal[] = [];
  for (const event of history.events ?? []) {
    const started = event.workflowExecutionStartedEventAttributes;
    if (started?.input?.payloads?.[0]) input = decode(started.input.payloads[0]);
    const signaled = event.workflowExecutionSignaledEventAttributes;
    if (signaled?.signalName === IMAGE_EVENT_SIGNAL && signaled.input?.payloads?.[0])
      signals.push(decode(signaled.input.payloads[0]) as ImageEventSignal);
  }
  return { input, signals };
}

/**
 * How to start a failed workflow again so that the result is what the event asked for, once:
 * - a registration or expiry run by an image revision's workflow: that workflow again (same id),
 *   signalled with the event it handled last, unless it runs (a newer event is being handled) or
 *   completed since (a later event settled the image); it starts the child's id again, and the child
 *   finds an image registered by an earlier attempt instead of registering a second one;
 * - a registration started on its own (no revision workflow): its id again with its original input;
 * - nothing when its latest run is no longer failed (restarted already, or run again by an event).
 */
export async function planRestart(client: Client, failed: FailedWorkflow): Promise<RestartPlan> {
  const skip = (why: string): RestartPlan => ({ how: 'skip', workflowId: failed.workflowId, why });
  const latest = await client.workflow.getHandle(failed.workflowId).describe();
  if (!isRestartable(latest.status.name))
    return skip(`its latest run is ${latest.status.name.toLowerCase()} (started ${latest.startTime.toISOString()})`);
  const parentId = latest.parentExecution?.workflowId ?? failed.parent?.workflowId;
  const revision = failed.type === IMAGE_REVISION_WORKFLOW ? failed.workflowId : parentId;
  if (revision) {
    const parent = await client.workflow.getHandle(revision).describe();
    if (parent.status.name === 'RUNNING')
      return skip(`its image revision's workflow ${revision} is running (it handles a newer event)`);
    if (!isRestartable(parent.status.name))
      return skip(`its image revision's workflow ${revision} is ${parent.status.name.toLowerCase()} since`);
    const { signals } = await runInputs(client, revision, parent.runId);
    const signal = signals.at(-1);
    if (!signal) return skip(`no event found in the history of ${revision}`);
    return {
      how: 'revision',
      workflowId: revision,
      taskQueue: parent.taskQueue,
      signal,
      restarts: failed.workflowId,
    };
  }
  const { input } = await runInputs(client, failed.workflowId, latest.runId);
  if (!input) return skip('its original input is not in its history');
  return {
    how: 'direct',
    workflowId: failed.workflowId,
    type: failed.type,
    taskQueue: latest.taskQueue,
    input: input as ImageRequest,
    restarts: failed.workflowId,
    target: latest.typedSearchAttributes.get(SA_CLOUD),
  };
}

/** Carries out a plan of planRestart. A registration another operator restarted meanwhile is left to that run. */
export async function restart(
  client: Client,
  plan: Exclude<RestartPlan, { how: 'skip' }>,
): Promise<{ workflowId: string; runId: string }> {
  if (plan.how === 'revision') {
    const handle = await deliverToRevision(client, plan.taskQueue, plan.workflowId, plan.signal);
    return { workflowId: handle.workflowId, runId: handle.signaledRunId };
  }
  const { event } = plan.input;
  const handle = await client.workflow.start(plan.type, {
    taskQueue: plan.taskQueue,
    workflowId: plan.workflowId,
    args: [plan.input],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    typedSearchAttributes: new TypedSearchAttributes(
      imageSearchAttributes(event, plan.type === REGISTER_WORKFLOW ? 'queued' : 'expiring', plan.target),
    ),
    memo: { title: event.title ?? '', version: event.version ?? '', origin: event.origin },
  });
  return { workflowId: handle.workflowId, runId: handle.firstExecutionRunId };
}
