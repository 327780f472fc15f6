import { randomUUID } from 'node:crypto';
import { Command, Option } from 'clipanion';
import {
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  WorkflowFailedError,
  type Client,
  type ScheduleDescription,
} from '@temporalio/client';
import { DurationSchema, SubscriptionSchema, subscriptionKey, type Config } from '../../core/config.js';
import { InvalidInputError } from '../../core/errors.js';
import { connectTemporal, workflowUiLink } from '../../core/temporal-client.js';
import {
  imageIdentity,
  moreThanNamed,
  perCloudLines,
  registrationTarget,
  registryRequests,
  syncedImageName,
  syncSummaryCounts,
  type SubscriptionSpec,
  type SyncImageListResult,
  type SyncSummary,
} from '../../core/workflow-contract.js';
import {
  applySubscriptions,
  firstNewRun,
  listSubscriptionSchedules,
  scheduleIdForUrl,
  setMassExpiryAllowance,
  subscribe,
  unsubscribe,
} from '../../subscriptions/schedules.js';
import { configuredSubscriptions, sourceOf } from '../../subscriptions/sources.js';
import { cloudTargets, registrationSite } from '../../clouds/index.js';
import { subscriptionReadContext } from '../../activities/subscriptions.js';
import { cloudsOf } from '../../core/starter.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';
import { isDuration } from '../validators.js';

/** How the last run of a subscription ended (or how long it has been running), for `subscriptions` and `sync-now`. */
interface RunOutcome {
  workflowId: string;
  runId: string;
  status: string;
  startedAt: string;
  /** When it ended (absent while it runs). */
  closedAt?: string;
  /** The run's timeout (the subscription's runTimeout when its schedule started it). */
  runTimeoutMs?: number;
  /** A running run: how long it has been running, and when the server times it out. */
  runningForMs?: number;
  timesOutAt?: string;
  summary?: SyncSummary;
  /** Why a failed run failed (a refused list says why here; a timed-out run, after how long). */
  error?: string;
  link: string;
}

function failureMessage(err: unknown): string {
  let cause: unknown = err instanceof WorkflowFailedError ? err.cause : err;
  // ActivityFailure → ApplicationFailure: the innermost message names the reason.
  while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
  return cause instanceof Error ? cause.message : String(cause);
}

/** `45s`, `3m05s`, `10m`, `1h02m`, `1h`: a run's age or timeout, as `subscriptions` prints it. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  const two = (n: number) => String(n).padStart(2, '0');
  if (m < 60) return s % 60 ? `${m}m${two(s % 60)}s` : `${m}m`;
  return m % 60 ? `${Math.floor(m / 60)}h${two(m % 60)}m` : `${Math.floor(m / 60)}h`;
}

function durationMs(duration: { seconds?: unknown; nanos?: number | null } | null | undefined): number | undefined {
  if (!duration) return undefined;
  const ms = Number(String(duration.seconds ?? 0)) * 1000 + Math.floor((duration.nanos ?? 0) / 1e6);
  return ms > 0 ? ms : undefined;
}

/** A timed-out run's reason: after how long, and what that means for the schedule. */
function timedOut(runTimeoutMs: number | undefined): string {
  const after = runTimeoutMs ? ` after ${formatDuration(runTimeoutMs)}` : '';
  return `timed out${after} (runTimeout): stopped by the server, the schedule's next run starts at its time`;
}

/** What Temporal says of a run, without its result: status, times, timeout. */
async function runState(
  client: Client,
  config: Config,
  workflowId: string,
  runId: string,
  now = Date.now(),
): Promise<RunOutcome> {
  const described = await client.workflow.getHandle(workflowId, runId).describe();
  const outcome: RunOutcome = {
    workflowId,
    runId,
    status: described.status.name,
    startedAt: described.startTime.toISOString(),
    link: workflowUiLink(config.temporal, workflowId, runId),
  };
  if (described.closeTime) outcome.closedAt = described.closeTime.toISOString();
  const timeout = durationMs(described.raw.executionConfig?.workflowRunTimeout);
  if (timeout) outcome.runTimeoutMs = timeout;
  if (outcome.status === 'RUNNING') {
    outcome.runningForMs = Math.max(0, now - described.startTime.getTime());
    if (timeout) outcome.timesOutAt = new Date(described.startTime.getTime() + timeout).toISOString();
  }
  if (outcome.status === 'TIMED_OUT') outcome.error = timedOut(timeout);
  return outcome;
}

async function runOutcome(
  client: Client,
  config: Config,
  workflowId: string,
  runId: string,
  wait: boolean,
): Promise<RunOutcome> {
  const handle = client.workflow.getHandle(workflowId, runId);
  const outcome = await runState(client, config, workflowId, runId);
  if (outcome.status === 'RUNNING' && !wait) return outcome;
  try {
    outcome.summary = ((await handle.result()) as SyncImageListResult).summary;
    outcome.status = 'COMPLETED';
  } catch (err) {
    Object.assign(outcome, await runState(client, config, workflowId, runId));
    outcome.error = outcome.status === 'TIMED_OUT' ? timedOut(outcome.runTimeoutMs) : failureMessage(err);
  }
  return outcome;
}

/** The runs the schedule started lately (at most the ten Temporal keeps), newest first. */
function recentRuns(description: ScheduleDescription) {
  return description.info.recentActions.map((a) => a.action.workflow).reverse();
}

/**
 * A subscription's recent runs: the newest (with its result or failure; when it is still
 * running, how long for and when it times out), the newest finished one when the newest runs,
 * and the runs before those that did not complete (how they ended), newest first.
 */
async function runHistory(
  client: Client,
  config: Config,
  description: ScheduleDescription,
): Promise<{ last?: RunOutcome; lastFinished?: RunOutcome; earlier: RunOutcome[] }> {
  const runs = recentRuns(description);
  if (runs.length === 0) return { earlier: [] };
  const last = await runOutcome(client, config, runs[0].workflowId, runs[0].firstExecutionRunId, false);
  const states = [];
  for (const run of runs.slice(1)) states.push(await runState(client, config, run.workflowId, run.firstExecutionRunId));
  let lastFinished: RunOutcome | undefined;
  if (last.status === 'RUNNING') {
    const finished = states.find((s) => s.status !== 'RUNNING');
    if (finished) lastFinished = await runOutcome(client, config, finished.workflowId, finished.runId, false);
  }
  const earlier = states.filter(
    (s) => s.status !== 'COMPLETED' && s.status !== 'RUNNING' && s.runId !== lastFinished?.runId,
  );
  return { last, lastFinished, earlier };
}

function when(iso: string): string {
  return iso.slice(0, 19).replace('T', ' ');
}

/**
 * The list id a subscription speaks for: the configured `listId`, else the one its last completed
 * run accepted (the schedule carries that copy to the next run, which refuses any other id).
 */
async function pinnedListId(
  client: Client,
  config: Config,
  description: ScheduleDescription,
  spec: SubscriptionSpec,
  last: RunOutcome | undefined,
): Promise<{ listId: string; by: 'configured' | 'first accepted' } | undefined> {
  if (spec.listId) return { listId: spec.listId, by: 'configured' };
  if (last?.summary?.listId) return { listId: last.summary.listId, by: 'first accepted' };
  for (const { action } of [...description.info.recentActions].reverse().slice(1)) {
    const run = await runOutcome(
      client,
      config,
      action.workflow.workflowId,
      action.workflow.firstExecutionRunId,
      false,
    );
    if (run.summary?.listId) return { listId: run.summary.listId, by: 'first accepted' };
  }
  return undefined;
}

export function describeSummary(summary: SyncSummary): string {
  const n = syncSummaryCounts(summary);
  const names = (items: SyncSummary['registered'], count: number) =>
    `${items.map(syncedImageName).join(', ')}${moreThanNamed(items.length, count)}`;
  const parts = [
    `list ${summary.listId ?? '?'}${summary.version ? ` version ${summary.version}` : ''}${summary.fetched === 'not-modified' ? ' (not modified)' : ''}`,
    `${n.registered} to register${n.registered ? `: ${names(summary.registered, n.registered)}` : ''}`,
    `${n.expired} to expire${n.expired ? `: ${names(summary.expired, n.expired)}` : ''}`,
    `${summary.unchanged} unchanged`,
  ];
  if (n.invalid)
    parts.push(
      `${n.invalid} invalid: ${summary.invalid.map((i) => `${i.identifier ?? '?'} (${i.problem})`).join(', ')}${moreThanNamed(summary.invalid.length, n.invalid)}`,
    );
  if (n.unread)
    parts.push(
      `${n.unread} unread, kept: ${(summary.unread ?? []).map((u) => `${u.imageId} (${u.problem})`).join(', ')}${moreThanNamed(summary.unread?.length ?? 0, n.unread)}`,
    );
  if (summary.massExpiryAllowed) parts.push('mass expiry allowed (--allow-mass-expiry)');
  if (summary.requests) parts.push(registryRequests(summary.requests));
  if (n.unresolved) parts.push(`${n.unresolved} old revision(s) without a sha512 left as they are`);
  parts.push(...perCloudLines(summary));
  return parts.join('; ');
}

abstract class TemporalCommand extends ConfiguredCommand {
  protected async withClient<T>(work: (client: Client, config: Config) => Promise<T>): Promise<T> {
    const config = await this.config();
    const { client, connection } = await connectTemporal(config.temporal);
    try {
      return await work(client, config);
    } finally {
      await connection.close();
    }
  }
}

export class SubscriptionsCommand extends TemporalCommand {
  static override paths = [['subscriptions']];
  static override usage = Command.Usage({
    description: 'List the subscribed image lists: their schedule, last run and its outcome, next run',
    details:
      "Every subscribed list has a Temporal Schedule (the Web UI's Schedules page) that runs a sync: read and verify the list, register new images and revisions, expire what it no longer names. Lists declared in the configuration are marked `config`, lists added with `subscribe` are marked `command`.",
    examples: [['Subscriptions and their last runs', '$0 subscriptions --conf /etc/snf-vmcatcher/application.conf']],
  });

  json = Option.Boolean('--json', false, { description: 'Print one JSON object per subscription' });

  async run(): Promise<number> {
    return this.withClient(async (client, config) => {
      const schedules = await listSubscriptionSchedules(client);
      if (schedules.length === 0) {
        this.say.note(
          "No subscriptions (declare them in the configuration's subscriptions and run `subscriptions apply`, or use `subscribe`)",
        );
        return EXIT.ok;
      }
      for (const { scheduleId, description, spec } of schedules) {
        const { last, lastFinished, earlier } = await runHistory(client, config, description);
        const next = description.state.paused ? undefined : description.info.nextActionTimes[0]?.toISOString();
        const pinned = await pinnedListId(client, config, description, spec, lastFinished ?? last);
        const action = description.action.type === 'startWorkflow' ? description.action : undefined;
        if (this.json) {
          this.out(
            JSON.stringify({
              scheduleId,
              url: spec.url,
              origin: spec.origin,
              everyMs: spec.everyMs,
              runTimeoutMs: action?.workflowRunTimeout,
              listId: pinned?.listId,
              listIdBy: pinned?.by,
              maxExpireFraction: spec.maxExpireFraction,
              paused: description.state.paused,
              lastRun: last,
              lastFinishedRun: lastFinished,
              earlierRunsNotCompleted: earlier,
              nextRun: next,
            }),
          );
          continue;
        }
        const described = sourceOf(spec).describe(spec);
        this.out(
          `${spec.url}  [${spec.origin}${described.label ? `, ${described.label}` : ''}] every ${Math.round(spec.everyMs / 60_000)} min${description.state.paused ? ', PAUSED' : ''}`,
        );
        this.out(`  schedule: ${scheduleId}`);
        if (described.pinsListId)
          this.out(
            `  list id: ${pinned ? `${pinned.listId} (${pinned.by})` : 'none yet (pinned by the first accepted run)'}`,
          );
        const finished = last?.status === 'RUNNING' ? lastFinished : last;
        if (last?.status === 'RUNNING') {
          const timeout = last.timesOutAt
            ? `, times out at ${when(last.timesOutAt)} (runTimeout ${formatDuration(last.runTimeoutMs ?? 0)})`
            : ', no run timeout (an older schedule: `subscriptions apply` gives it one)';
          this.out(`  running: since ${when(last.startedAt)}, for ${formatDuration(last.runningForMs ?? 0)}${timeout}`);
          this.out(`            ${last.link}`);
        }
        if (!finished) this.out(`  last run: ${last ? 'none finished yet' : 'none yet'}`);
        else {
          this.out(
            `  last run: ${when(finished.startedAt)} ${finished.status}${finished.error ? `: ${finished.error}` : ''}`,
          );
          if (finished.summary) this.out(`            ${describeSummary(finished.summary)}`);
          this.out(`            ${finished.link}`);
        }
        for (const run of earlier.slice(0, 3))
          this.out(
            `  earlier:  ${when(run.startedAt)} ${run.status}${run.status === 'TIMED_OUT' ? ` after ${formatDuration(run.runTimeoutMs ?? 0)}` : ''}  ${run.link}`,
          );
        this.out(`  next run: ${next ? when(next) : 'none (paused)'}`);
      }
      return EXIT.ok;
    });
  }
}

export class SubscriptionsApplyCommand extends TemporalCommand {
  static override paths = [['subscriptions', 'apply']];
  static override usage = Command.Usage({
    description: 'Make the Temporal Schedules match the subscriptions of the configuration',
    details:
      'Creates a schedule for each subscription the file declares, updates those that changed (pausing those marked `paused = true`), and deletes the schedules of subscriptions the file no longer declares. Every worker does this when it starts.',
    examples: [['After editing application.conf', '$0 subscriptions apply --conf /etc/snf-vmcatcher/application.conf']],
  });

  async run(): Promise<number> {
    return this.withClient(async (client, config) => {
      const result = await applySubscriptions(client, config, this.log);
      for (const [what, ids] of Object.entries(result)) for (const id of ids as string[]) this.out(`${what} ${id}`);
      return EXIT.ok;
    });
  }
}

export class SubscribeCommand extends TemporalCommand {
  static override paths = [['subscribe']];
  static override usage = Command.Usage({
    description: 'Follow an image list that the configuration does not declare',
    details:
      'Adds a schedule that syncs the list every `--every` (default 3h). Name who may sign it (`--endorser-dn` and `--endorser-ca`), or the signers of security.endorsers apply. The credential is a name from security.credentials, never the token itself. Lists declared in the configuration are managed with `subscriptions apply`.',
    examples: [
      [
        'Follow a VO list every 3 hours',
        '$0 subscribe --conf app.conf --url https://vmcaster.appdb.egi.eu/store/vo/fedcloud.egi.eu/image.list --credential appdb --endorser-dn "/DC=EU/…" --endorser-ca "/DC=EU/…"',
      ],
    ],
  });

  url = Option.String('--url', { required: true, description: 'The image list URL (https:, http: or file:)' });
  every = Option.String('--every', { validator: isDuration, description: 'How often to sync (default 3h)' });
  runTimeout = Option.String('--run-timeout', {
    validator: isDuration,
    description: 'Time out a run still going after this long, so the next one can start (default 1h)',
  });
  credential = Option.String('--credential', {
    description: 'Name of a credential in security.credentials sent to the list host',
  });
  endorserDn = Option.String('--endorser-dn', { description: 'Subject DN of the signer authorised for this list' });
  endorserCa = Option.String('--endorser-ca', { description: 'Issuer DN of that signer' });
  vo = Option.String('--vo', { description: "VO of the list's images (default: the list's own)" });
  cloud = Option.String('--cloud', { description: 'kamaki cloud to register into (default: synnefo.cloud)' });
  images = Option.Array('--image', { description: 'Only this image identifier (repeatable)' });
  listId = Option.String('--list-id', {
    description: 'The dc:identifier the list must carry (default: the first one accepted, then pinned)',
  });
  syncNow = Option.Boolean('--sync-now', false, { description: 'Start the first sync at once' });

  async run(): Promise<number> {
    if ((this.endorserDn === undefined) !== (this.endorserCa === undefined))
      throw new InvalidInputError('give both --endorser-dn and --endorser-ca, or neither');
    const parsed = SubscriptionSchema.safeParse({
      url: this.url,
      every: this.every,
      runTimeout: this.runTimeout,
      credential: this.credential,
      endorser: this.endorserDn ? { dn: this.endorserDn, ca: this.endorserCa } : undefined,
      vo: this.vo,
      cloud: this.cloud,
      images: this.images,
      listId: this.listId,
    });
    if (!parsed.success)
      throw new InvalidInputError(
        parsed.error.issues.map((i) => `--${String(i.path[0] ?? 'url')}: ${i.message}`).join('; '),
      );
    return this.withClient(async (client, config) => {
      if (parsed.data.credential && !config.security.credentials[parsed.data.credential]) {
        throw new InvalidInputError(`--credential ${parsed.data.credential} is not defined in security.credentials`);
      }
      const scheduleId = await subscribe(client, config, parsed.data);
      if (this.syncNow) await client.schedule.getHandle(scheduleId).trigger(ScheduleOverlapPolicy.BUFFER_ONE);
      this.out(`subscribed ${scheduleId}`);
      return EXIT.ok;
    });
  }
}

export class UnsubscribeCommand extends TemporalCommand {
  static override paths = [['unsubscribe']];
  static override usage = Command.Usage({
    description: 'Stop following an image list added with `subscribe`',
    details: "Deletes the list's schedule. The images it registered stay as they are.",
    examples: [['Stop following a list', '$0 unsubscribe --conf app.conf --url https://example.org/image.list']],
  });

  url = Option.String('--url', { required: true, description: 'The image list URL' });

  async run(): Promise<number> {
    return this.withClient(async (client, config) => {
      this.out(`unsubscribed ${await unsubscribe(client, config, this.url)}`);
      return EXIT.ok;
    });
  }
}

export class SyncNowCommand extends TemporalCommand {
  static override paths = [['sync-now']];
  static override usage = Command.Usage({
    description: 'Sync a subscribed image list or registry project now, outside its schedule',
    details:
      "Triggers the subscription's schedule (after the run in progress, if any); a registry project is named `<registry>/<project>`, e.g. https://registry.egi.eu/egi_vm_images. With --wait, waits for the run and prints what it did; a refused list or registry login exits with 1 and says why. A run that would expire more than the subscription's maxExpireFraction of its images stops (MassExpiryRefused); --allow-mass-expiry lets the one run this command starts through.",
    examples: [
      ['Sync and wait', '$0 sync-now --conf app.conf --url https://example.org/image.list --wait'],
      [
        'Let a sync expire most of the list, once',
        '$0 sync-now --conf app.conf --url https://example.org/image.list --allow-mass-expiry --wait',
      ],
    ],
  });

  url = Option.String('--url', {
    required: true,
    description: 'The subscribed image list URL, or <registry>/<project>',
  });
  wait = Option.Boolean('--wait', false, { description: 'Wait for the run to finish and print its summary' });
  allowMassExpiry = Option.Boolean('--allow-mass-expiry', false, {
    description: "Let this one run expire more than the subscription's maxExpireFraction of its images",
  });
  timeout = Option.String('--timeout', '10m', {
    validator: isDuration,
    description: 'With --wait: give up waiting after this long (default 10m)',
  });

  async run(): Promise<number> {
    return this.withClient(async (client, config) => {
      const handle = client.schedule.getHandle(scheduleIdForUrl(config, this.url));
      const described = await handle.describe().catch((err: unknown) => {
        if (err instanceof ScheduleNotFoundError)
          throw new InvalidInputError(`no subscription to ${this.url} (see \`subscriptions\`)`);
        throw err;
      });
      const before = described.info.recentActions;
      const deadline = Date.now() + (DurationSchema.parse(this.timeout) as number);
      const started = async () => {
        for (;;) {
          const found = firstNewRun(before, (await handle.describe()).info.recentActions);
          if (found) return found;
          if (Date.now() > deadline)
            throw new InvalidInputError(`the sync of ${this.url} did not start within --timeout ${this.timeout}`);
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      };
      let run: { workflowId: string; firstExecutionRunId: string } | undefined;
      if (this.allowMassExpiry) {
        // The allowance rides in the schedule's action until the run it triggers has started.
        const allowance = { id: randomUUID(), until: new Date(deadline).toISOString() };
        await setMassExpiryAllowance(client, handle.scheduleId, allowance);
        try {
          await handle.trigger(ScheduleOverlapPolicy.BUFFER_ONE);
          run = await started();
        } finally {
          await setMassExpiryAllowance(client, handle.scheduleId, undefined);
        }
      } else {
        await handle.trigger(ScheduleOverlapPolicy.BUFFER_ONE);
      }
      if (!this.wait) {
        this.out(`triggered ${handle.scheduleId}`);
        return EXIT.ok;
      }
      run ??= await started();
      const outcome = await runOutcome(client, config, run.workflowId, run.firstExecutionRunId, true);
      if (outcome.summary) this.out(describeSummary(outcome.summary));
      if (outcome.status !== 'COMPLETED')
        return this.fail(
          `the sync ${outcome.status}${outcome.error ? `: ${outcome.error}` : ''} (see ${outcome.link})`,
        );
      this.say.note(`See ${outcome.link}`);
      return EXIT.ok;
    });
  }
}

export class SubscriptionsMissingCommand extends TemporalCommand {
  static override paths = [['subscriptions', 'missing']];
  static override usage = Command.Usage({
    description: 'Per cloud, the images a subscription says the cloud should have and it does not',
    details:
      "Reads each subscription of the configuration now (verified as a sync reads it) and asks each of its clouds what it holds of the list (our images only), then names, cloud by cloud, every image of the list missing there at the list's revision. Nothing is registered or changed: a missing image is registered by the next sync (`sync-now`). Exits 0 when nothing is missing, 1 when something is, 2 on a usage error.",
    examples: [
      ['What every cloud lacks', '$0 subscriptions missing --conf /etc/snf-vmcatcher/application.conf'],
      [
        'One cloud, one list',
        '$0 subscriptions missing --cloud cyfronet --url https://appdb.egi.eu/store/vo/x/image.list',
      ],
    ],
  });

  url = Option.String('--url', { description: 'Only this subscription (its URL, or `<registry>/<project>`)' });
  cloud = Option.String('--cloud', { description: 'Only this cloud (a name of `clouds`)' });
  json = Option.Boolean('--json', false, { description: 'Print one JSON object per subscription and cloud' });

  async run(): Promise<number> {
    return this.withClient(async (client, config) => {
      const site = registrationSite(config);
      const targets = cloudTargets({ config, logger: this.log });
      const context = subscriptionReadContext(config, this.log, async () => client);
      const chosen = configuredSubscriptions(config, 'config').filter(
        ({ spec }) => this.url === undefined || subscriptionKey(spec.url) === subscriptionKey(this.url),
      );
      if (chosen.length === 0)
        return this.fail(
          this.url ? `no subscription of the configuration is ${this.url}` : 'the configuration has no subscriptions',
          EXIT.usage,
        );
      let missingAnywhere = 0;
      for (const { spec } of chosen) {
        const read = await sourceOf(spec).read(context, { subscription: spec });
        if (read.notModified) throw new Error(`${spec.url} answered 304 Not Modified to an unconditional request`);
        const wanted = read.accepted.images.filter((image) => !image.expired).map((image) => image.event);
        const vo = spec.vo ?? wanted.find((event) => event.vo)?.vo;
        for (const options of cloudsOf({ vo }, read.options, site, spec.clouds)) {
          if (this.cloud !== undefined && options.cloud !== this.cloud) continue;
          const cloud = options.cloud ?? registrationTarget(options, site);
          let held: Set<string>;
          try {
            const inventory = await targets.of(options).inventory({ listId: read.accepted.listId, options });
            held = new Set(inventory.images.map((image) => `${image.imageId}\u0000${image.revision}`));
          } catch (err) {
            missingAnywhere++;
            this.report(err);
            this.out(
              this.json
                ? JSON.stringify({ url: spec.url, cloud, error: String((err as Error).message ?? err) })
                : `${spec.url} on ${cloud}: cannot tell (${(err as Error).message ?? String(err)})`,
            );
            continue;
          }
          const missing = wanted.filter((event) => {
            const { imageId, revision } = imageIdentity(event);
            return !held.has(`${imageId}\u0000${revision}`);
          });
          missingAnywhere += missing.length;
          const named = missing.map((event) => ({
            imageId: event.imageId,
            title: event.title,
            version: event.version,
          }));
          if (this.json) {
            this.out(
              JSON.stringify({
                url: spec.url,
                listId: read.accepted.listId,
                cloud,
                wanted: wanted.length,
                missing: named,
              }),
            );
            continue;
          }
          this.out(
            `${spec.url} on ${cloud}: ${missing.length} of ${wanted.length} missing${missing.length ? ':' : ''}`,
          );
          for (const image of named)
            this.out(`  ${image.title ?? image.imageId}${image.version ? ` ${image.version}` : ''} (${image.imageId})`);
        }
      }
      return missingAnywhere === 0 ? EXIT.ok : EXIT.failed;
    });
  }
}
