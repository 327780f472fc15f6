/**
 * Subscriptions as Temporal Schedules: one schedule per subscribed list starts a syncImageList
 * run every interval (with jitter) and on demand (`sync-now`). The schedules declared in
 * application.conf are made to match the file (`subscriptions apply`, and every worker at start);
 * those added with `subscribe` are left to `unsubscribe`.
 */
import {
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  type Client,
  type ScheduleDescription,
  type ScheduleExecutionResult,
  type ScheduleOptions,
  type ScheduleUpdateOptions,
} from '@temporalio/client';
import { subscriptionKey, type Config, type Subscription } from '../core/config.js';
import { InvalidInputError } from '../core/errors.js';
import type { Logger } from '../core/logging.js';
import {
  isSubscriptionSchedule,
  scheduleIdOfKey,
  SYNC_WORKFLOW,
  syncWorkflowIdOf,
  type SubscriptionSpec,
  type SyncImageListInput,
  DEFAULT_SYNC_RUN_TIMEOUT_MS,
} from '../core/workflow-contract.js';
import { imageListSource } from '../image-lists/subscription-source.js';
import { configuredSubscriptions, sourceOf } from './sources.js';

const MAX_JITTER_MS = 15 * 60_000;

/** `subscription:<host/path, readable>:<digest of the whole URL>`: stable for a list, whatever the spelling of its URL. */
export function subscriptionScheduleId(url: string): string {
  return scheduleIdOfKey(undefined, subscriptionKey(url));
}

/** The schedule of a subscription of any source: by its source's name and its key (spec.url). */
function scheduleIdOf(spec: Pick<SubscriptionSpec, 'source' | 'url'>): string {
  return scheduleIdOfKey(spec.source, subscriptionKey(spec.url));
}

/** The schedule `sync-now --url` means: a subscription of the configuration with that key (`<registry>/<project>`), else a list. */
export function scheduleIdForUrl(config: Config, url: string): string {
  const wanted = url.replace(/\/+$/, '');
  const configured = configuredSubscriptions(config, 'config').find(({ spec }) => spec.url === wanted);
  return configured ? scheduleIdOf(configured.spec) : subscriptionScheduleId(url);
}

/** `sync:<schedule id without its prefix>`: every run a subscription's schedule starts has a workflow id beginning so. */
export function syncWorkflowIdPrefix(spec: SubscriptionSpec): string {
  return syncWorkflowIdOf(scheduleIdOf(spec));
}

/** A run a schedule started, as its recent actions name it. */
export type ScheduledRun = ScheduleExecutionResult['action']['workflow'];

/**
 * The oldest of a schedule's recent actions that `before` (its recent actions earlier) does not
 * hold: the run a trigger started. A run is known by its run id as well as its workflow id: the
 * server names a triggered run after the schedule and the second of the trigger, so a second
 * trigger within the same second starts another run of the same workflow id.
 */
export function firstNewRun(
  before: readonly ScheduleExecutionResult[],
  now: readonly ScheduleExecutionResult[],
): ScheduledRun | undefined {
  const key = (run: ScheduledRun) => `${run.workflowId}\n${run.firstExecutionRunId}`;
  const known = new Set(before.map(({ action }) => key(action.workflow)));
  return now.map(({ action }) => action.workflow).find((run) => !known.has(key(run)));
}

function scheduleOptions(config: Config, spec: SubscriptionSpec, paused: boolean): ScheduleOptions {
  const input: SyncImageListInput = { subscription: spec };
  const scheduleId = scheduleIdOf(spec);
  const described = sourceOf(spec).describe(spec);
  return {
    scheduleId,
    spec: { intervals: [{ every: spec.everyMs }], jitter: Math.min(Math.floor(spec.everyMs / 10), MAX_JITTER_MS) },
    action: {
      type: 'startWorkflow',
      workflowType: SYNC_WORKFLOW,
      workflowId: syncWorkflowIdPrefix(spec),
      taskQueue: config.temporal.taskQueue,
      args: [input],
      // A run still going after this is timed out by the server, and the schedule's next run can start.
      workflowRunTimeout: runTimeoutOf(spec),
      staticSummary: described.summary,
      staticDetails: [
        described.reads,
        `What a run changed is on its User Metadata tab (Current Details).`,
        '',
        `- **VO**: ${spec.vo ?? "(the list's own)"}`,
        `- **Target**: ${spec.clouds?.join(', ') ?? spec.cloud ?? '(the default cloud)'}`,
        `- **Endorsers**: ${spec.endorsers.map((e) => e.dn).join('; ') || '(security.endorsers)'}`,
      ].join('\n'),
    },
    // One run at a time (runs time out, so one stuck run cannot hold the others); a run missed while the server was down is taken once.
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 hour', pauseOnFailure: false },
    memo: { url: spec.url, origin: spec.origin },
    state: { paused, note: paused ? 'paused in application.conf' : undefined },
  };
}

/** The spec a schedule runs (its action's argument), or undefined for a schedule we did not make. */
function specOf(description: ScheduleDescription): SubscriptionSpec | undefined {
  const action = description.action;
  if (action.type !== 'startWorkflow' || action.workflowType !== SYNC_WORKFLOW) return undefined;
  return (action.args?.[0] as SyncImageListInput | undefined)?.subscription;
}

async function describe(client: Client, scheduleId: string): Promise<ScheduleDescription | undefined> {
  try {
    return await client.schedule.getHandle(scheduleId).describe();
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) return undefined;
    throw err;
  }
}

/** Every subscription schedule of the namespace, with its spec. */
export async function listSubscriptionSchedules(
  client: Client,
): Promise<Array<{ scheduleId: string; description: ScheduleDescription; spec: SubscriptionSpec }>> {
  const found = [];
  for await (const summary of client.schedule.list()) {
    if (!isSubscriptionSchedule(summary.scheduleId)) continue;
    const description = await describe(client, summary.scheduleId);
    const spec = description && specOf(description);
    if (description && spec) found.push({ scheduleId: summary.scheduleId, description, spec });
  }
  return found;
}

interface ApplyResult {
  created: string[];
  updated: string[];
  deleted: string[];
  unchanged: string[];
}

/** A spec's run timeout (a spec from before run timeouts: the default). */
function runTimeoutOf(spec: SubscriptionSpec): number {
  return spec.runTimeoutMs ?? DEFAULT_SYNC_RUN_TIMEOUT_MS;
}

function sameSchedule(description: ScheduleDescription, spec: SubscriptionSpec, paused: boolean): boolean {
  const current = specOf(description);
  const runTimeout = description.action.type === 'startWorkflow' ? description.action.workflowRunTimeout : undefined;
  return (
    JSON.stringify(current) === JSON.stringify(spec) &&
    description.state.paused === paused &&
    runTimeout === runTimeoutOf(spec)
  );
}

/**
 * Makes the namespace's subscription schedules match application.conf: every subscription of the
 * file (image list or registry project) has its schedule (created, or updated when its URL, interval, run timeout,
 * endorsers, credential name, VO, cloud, image selection or `paused` changed; a schedule made before run timeouts gets one), and a schedule the file once declared and no
 * longer does is deleted. Schedules added with `subscribe` are not the file's to delete.
 */
export async function applySubscriptions(client: Client, config: Config, logger: Logger): Promise<ApplyResult> {
  const result: ApplyResult = { created: [], updated: [], deleted: [], unchanged: [] };
  const wanted = new Map(configuredSubscriptions(config, 'config').map((w) => [scheduleIdOf(w.spec), w] as const));
  for (const [scheduleId, { spec, paused }] of wanted) {
    const existing = await describe(client, scheduleId);
    const options = scheduleOptions(config, spec, paused);
    if (!existing) {
      await client.schedule.create(options);
      result.created.push(scheduleId);
    } else if (sameSchedule(existing, spec, paused)) {
      result.unchanged.push(scheduleId);
    } else {
      await client.schedule.getHandle(scheduleId).update((previous): ScheduleUpdateOptions => ({
        ...previous,
        spec: options.spec,
        action: options.action,
        policies: options.policies,
        state: { ...previous.state, paused, note: options.state?.note },
      }));
      result.updated.push(scheduleId);
    }
  }
  for (const { scheduleId, spec, description } of await listSubscriptionSchedules(client)) {
    // Only this deployment's: another one sharing the namespace (its own task queue) keeps its schedules.
    const ours =
      description.action.type === 'startWorkflow' && description.action.taskQueue === config.temporal.taskQueue;
    if (ours && spec.origin === 'config' && !wanted.has(scheduleId)) {
      await client.schedule.getHandle(scheduleId).delete();
      result.deleted.push(scheduleId);
    }
  }
  logger.info(result, 'subscription schedules match the configuration');
  return result;
}

/**
 * Puts `sync-now --allow-mass-expiry`'s one-off allowance into the schedule's action (so the run it
 * triggers is a run of the schedule, and takes the accepted copy along), or takes it out again.
 * The run honours it only before `until` and only once (syncImageList), so an allowance left
 * behind by a command that died lets nothing else through.
 */
export async function setMassExpiryAllowance(
  client: Client,
  scheduleId: string,
  allowance: SyncImageListInput['allowMassExpiry'],
): Promise<void> {
  await client.schedule.getHandle(scheduleId).update((previous) => {
    const action = previous.action;
    if (action.type !== 'startWorkflow' || action.workflowType !== SYNC_WORKFLOW)
      throw new InvalidInputError(`schedule ${scheduleId} does not run ${SYNC_WORKFLOW}`);
    const input: SyncImageListInput = { ...(action.args?.[0] as SyncImageListInput) };
    if (allowance) input.allowMassExpiry = allowance;
    else delete input.allowMassExpiry;
    return { ...previous, action: { ...action, args: [input] } } as ScheduleUpdateOptions;
  });
}

/** `subscribe`: a schedule for a list the file does not declare. */
export async function subscribe(client: Client, config: Config, sub: Subscription): Promise<string> {
  const scheduleId = subscriptionScheduleId(sub.url);
  if (config.subscriptions.some((s) => subscriptionScheduleId(s.url) === scheduleId)) {
    throw new InvalidInputError(
      `${subscriptionKey(sub.url)} is declared in the configuration's subscriptions: change it there and run \`subscriptions apply\``,
    );
  }
  const spec = imageListSource.spec(sub, 'command');
  const existing = await describe(client, scheduleId);
  const options = scheduleOptions(config, spec, false);
  if (existing) {
    await client.schedule
      .getHandle(scheduleId)
      .update((previous) => ({ ...previous, spec: options.spec, action: options.action, policies: options.policies }));
  } else {
    await client.schedule.create(options);
  }
  return scheduleId;
}

/** `unsubscribe`: deletes the list's schedule; the images it registered stay (expire them by removing them from the list). */
export async function unsubscribe(client: Client, config: Config, url: string): Promise<string> {
  const scheduleId = subscriptionScheduleId(url);
  if (config.subscriptions.some((s) => subscriptionScheduleId(s.url) === scheduleId)) {
    throw new InvalidInputError(
      `${subscriptionKey(url)} is declared in the configuration's subscriptions: remove it there and run \`subscriptions apply\``,
    );
  }
  if (!(await describe(client, scheduleId))) throw new InvalidInputError(`no subscription to ${subscriptionKey(url)}`);
  await client.schedule.getHandle(scheduleId).delete();
  return scheduleId;
}
