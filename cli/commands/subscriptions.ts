import { randomUUID } from 'node:crypto';
import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import {
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  WorkflowFailedError,
  type Client,
  type ScheduleDescription,
} from '@temporalio/client';
import { DurationSchema, SubscriptionSchema, type Config } from '../../core/config.js';
import { InvalidInputError } from '../../core/errors.js';
import { connectTemporal, workflowUiLink } from '../../core/temporal-client.js';
import {
  moreThanNamed,
  syncedImageName,
  syncSummaryCounts,
  type SubscriptionSpec,
  type SyncImageListResult,
  type SyncSummary,
} from '../../core/workflow-contract.js';
import {
  applySubscriptions,
  listSubscriptionSchedules,
  scheduleIdForUrl,
  setMassExpiryAllowance,
  subscribe,
  unsubscribe,
} from '../../subscriptions/schedules.js';
import { sourceOf } from '../../subscriptions/sources.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

/** How the last run of a subscription ended, for `subscriptions` and `sync-now`. */
export interface RunOutcome {
  workflowId: string;
  runId: string;
  status: string;
  startedAt: string;
  summary?: SyncSummary;
  /** Why a failed run failed (a refused list says why here). */
  error?: string;
  link: string;
}

function failureMessage(err: unknown): string {
  let cause: unknown = err instanceof WorkflowFailedError ? err.cause : err;
  // ActivityFailure → ApplicationFailure: the innermost message names the reason.
  while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
  return cause instanceof Error ? cause.message : String(cause);
}

async function runOutcome(
  client: Client,
  config: Config,
  workflowId: string,
  runId: string,
  wait: boolean,
): Promise<RunOutcome> {
  const handle = client.workflow.getHandle(workflowId, runId);
  const described = await handle.describe();
  const outcome: RunOutcome = {
    workflowId,
    runId,
    status: described.status.name,
    startedAt: described.startTime.toISOString(),
    link: workflowUiLink(config.temporal, workflowId, runId),
  };
  if (described.status.name === 'RUNNING' && !wait) return outcome;
  try {
    outcome.summary = ((await handle.result()) as SyncImageListResult).summary;
    outcome.status = 'COMPLETED';
  } catch (err) {
    outcome.status = (await handle.describe()).status.name;
    outcome.error = failureMessage(err);
  }
  return outcome;
}

function lastRun(description: ScheduleDescription) {
  const actions = description.info.recentActions;
  return actions.length > 0 ? actions[actions.length - 1].action.workflow : undefined;
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
  if (n.unresolved) parts.push(`${n.unresolved} old revision(s) without a sha512 left as they are`);
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
        const run = lastRun(description);
        const last = run ? await runOutcome(client, config, run.workflowId, run.firstExecutionRunId, false) : undefined;
        const next = description.state.paused ? undefined : description.info.nextActionTimes[0]?.toISOString();
        const pinned = await pinnedListId(client, config, description, spec, last);
        if (this.json) {
          this.out(
            JSON.stringify({
              scheduleId,
              url: spec.url,
              origin: spec.origin,
              everyMs: spec.everyMs,
              listId: pinned?.listId,
              listIdBy: pinned?.by,
              maxExpireFraction: spec.maxExpireFraction,
              paused: description.state.paused,
              lastRun: last,
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
        if (!last) this.out('  last run: none yet');
        else {
          this.out(
            `  last run: ${last.startedAt.slice(0, 19).replace('T', ' ')} ${last.status}${last.error ? `: ${last.error}` : ''}`,
          );
          if (last.summary) this.out(`            ${describeSummary(last.summary)}`);
          this.out(`            ${last.link}`);
        }
        this.out(`  next run: ${next ? next.slice(0, 19).replace('T', ' ') : 'none (paused)'}`);
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

export const isDuration = t.makeValidator<unknown, string>({
  test: (value, state): value is string => {
    if (typeof value === 'string' && DurationSchema.safeParse(value).success) return true;
    state?.errors?.push(`${state.p ?? 'value'}: expected a duration such as 3h or 90m (got ${String(value)})`);
    return false;
  },
});

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
      const before = new Set(described.info.recentActions.map((a) => a.action.workflow.workflowId));
      const deadline = Date.now() + (DurationSchema.parse(this.timeout) as number);
      const started = async () => {
        for (;;) {
          const found = (await handle.describe()).info.recentActions
            .map((a) => a.action.workflow)
            .find((w) => !before.has(w.workflowId));
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
