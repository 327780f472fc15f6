import { CLOUD_TYPES } from '../../clouds/index.js';
import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { WorkflowNotFoundError, type Client, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter, optionalTsToDate } from '@temporalio/common';
import { DurationSchema, type Config } from '../../core/config.js';
import { planRestart, restart, type FailedWorkflow } from '../../core/starter.js';
import { connectTemporal, workflowUiLink } from '../../core/temporal-client.js';
import {
  EXPIRE_WORKFLOW,
  REGISTER_WORKFLOW,
  IMAGE_REVISION_WORKFLOW,
  SA_IMAGE_ID,
  SA_IMAGE_LIST_ID,
  SA_IMAGE_TITLE,
  SA_STAGE,
  SA_VO,
  STAGES,
  registrationTarget,
} from '../../core/workflow-contract.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';
import { formatTable } from '../table.js';
import { isDuration } from '../validators.js';

const STATUSES = ['running', 'completed', 'failed', 'canceled', 'terminated', 'timed-out'] as const;
const STATUS_QUERY: Record<(typeof STATUSES)[number], string> = {
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  canceled: 'Canceled',
  terminated: 'Terminated',
  'timed-out': 'TimedOut',
};

/** A visibility query string literal. */
function literal(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

interface RegistrationFilter {
  stage?: string;
  status?: (typeof STATUSES)[number];
  imageIdentifier?: string;
  imageListIdentifier?: string;
  vo?: string;
  /** Closed at or after this time. */
  closedSince?: Date;
  /** Registered into this cloud (see cloudClause). */
  cloud?: string;
}

/**
 * The registration targets `--cloud C` names: a target as workflow ids spell it (`<type>-<name>`,
 * e.g. `synnefo-<kamaki cloud>`, `glance-<name>`), or a cloud's name, of any kind of cloud.
 */
function cloudTargets(cloud: string): string[] {
  if (CLOUD_TYPES.some((type) => cloud.startsWith(`${type}-`))) return [cloud];
  return CLOUD_TYPES.map((type) => registrationTarget({}, { type, name: cloud }));
}

/**
 * The one place `--cloud` becomes a visibility query. The target is the second part of every
 * workflow id of a registration (core/workflow-contract.ts); an `ImageCloud` search attribute, once
 * workflows carry it, replaces this clause here alone.
 */
function cloudClause(cloud: string): string {
  const prefixes = cloudTargets(cloud).flatMap((target) =>
    ['register', 'expire', 'image'].map((kind) => `${kind}:${target}:`),
  );
  return `(${prefixes.map((prefix) => `WorkflowId STARTS_WITH ${literal(prefix)}`).join(' OR ')})`;
}

/** The Temporal visibility query for the registrations an operator asks about. */
export function registrationsQuery(filter: RegistrationFilter): string {
  // An image revision's workflow counts while no worker has started its registration or expiry yet
  // (workers down, or all busy): then it is the only trace of the event.
  const clauses = [
    `(WorkflowType IN (${literal(REGISTER_WORKFLOW)}, ${literal(EXPIRE_WORKFLOW)}) OR ` +
      `(WorkflowType = ${literal(IMAGE_REVISION_WORKFLOW)} AND ${SA_STAGE.name} = ${literal('queued')}))`,
  ];
  if (filter.stage) clauses.push(`${SA_STAGE.name} = ${literal(filter.stage)}`);
  if (filter.status) clauses.push(`ExecutionStatus = ${literal(STATUS_QUERY[filter.status])}`);
  if (filter.imageIdentifier) clauses.push(`${SA_IMAGE_ID.name} = ${literal(filter.imageIdentifier)}`);
  if (filter.imageListIdentifier) clauses.push(`${SA_IMAGE_LIST_ID.name} = ${literal(filter.imageListIdentifier)}`);
  if (filter.vo) clauses.push(`${SA_VO.name} = ${literal(filter.vo)}`);
  if (filter.closedSince) clauses.push(`CloseTime >= ${literal(filter.closedSince.toISOString())}`);
  if (filter.cloud) clauses.push(cloudClause(filter.cloud));
  return clauses.join(' AND ');
}

class RegistrationsCommand extends ConfiguredCommand {
  static override paths = [['registrations']];
  static override usage = Command.Usage({
    description: 'List registrations and expiries known to Temporal, newest first',
    details:
      'Asks the Temporal server for `registerImage` and `expireImage` workflows (and the `imageRevision` workflows of events no worker has taken up yet), filtered by stage, status, image, image list or VO: the same search the Web UI offers, for scripts and terminals.',
    examples: [
      ['Failed registrations', '$0 registrations --conf /etc/snf-vmcatcher/application.conf --status failed'],
      ['Everything of one image list, as JSON', '$0 registrations --image-list-identifier 0a1b2c… --json'],
    ],
  });

  stage = Option.String('--stage', {
    validator: t.isEnum(STAGES),
    description: `Only this stage (${STAGES.join(', ')})`,
  });
  status = Option.String('--status', {
    validator: t.isEnum(STATUSES),
    description: `Only this status (${STATUSES.join(', ')})`,
  });
  imageIdentifier = Option.String('--image-identifier', { description: 'Only this image (dc:identifier)' });
  imageListIdentifier = Option.String('--image-list-identifier', {
    description: 'Only this image list (its dc:identifier)',
  });
  vo = Option.String('--vo', { description: 'Only this VO' });
  limit = Option.String('--limit', '50', {
    validator: t.cascade(t.isNumber(), t.isInteger(), t.isAtLeast(1)),
    description: 'At most this many (default 50)',
  });
  json = Option.Boolean('--json', false, { description: 'Print JSON lines, one per workflow' });

  async run(): Promise<number> {
    const config = await this.config();
    const query = registrationsQuery({
      stage: this.stage,
      status: this.status,
      imageIdentifier: this.imageIdentifier,
      imageListIdentifier: this.imageListIdentifier,
      vo: this.vo,
    });
    const { client, connection } = await connectTemporal(config.temporal);
    try {
      const rows = [];
      for await (const wf of client.workflow.list({ query, pageSize: Math.min(Number(this.limit), 1000) })) {
        const sa = wf.typedSearchAttributes;
        rows.push({
          workflowId: wf.workflowId,
          type: wf.type,
          status: wf.status.name,
          stage: sa.get(SA_STAGE) ?? '',
          imageIdentifier: sa.get(SA_IMAGE_ID) ?? '',
          imageListIdentifier: sa.get(SA_IMAGE_LIST_ID) ?? '',
          vo: sa.get(SA_VO) ?? '',
          started: wf.startTime.toISOString(),
          closed: wf.closeTime?.toISOString(),
          link: workflowUiLink(config.temporal, wf.workflowId, wf.runId),
        });
        if (rows.length >= Number(this.limit)) break;
      }
      if (this.json) {
        for (const row of rows) this.out(JSON.stringify(row));
      } else if (rows.length === 0) {
        this.say.note(`No registrations match (${query})`);
      } else {
        const header = ['STATUS', 'STAGE', 'IMAGE', 'IMAGE LIST', 'STARTED', 'WORKFLOW ID'];
        const table = rows.map((r) => [
          r.status,
          r.stage,
          r.imageIdentifier,
          r.imageListIdentifier,
          r.started.slice(0, 19).replace('T', ' '),
          r.workflowId,
        ]);
        for (const line of formatTable(header, table)) this.out(line);
      }
      return EXIT.ok;
    } finally {
      await connection.close();
    }
  }
}

// ---------------------------------------------------------------------------------------
// One registration's story, from its history

type HistoryEvent = NonNullable<Awaited<ReturnType<WorkflowHandle['fetchHistory']>>['events']>[number];
type Failure = NonNullable<NonNullable<HistoryEvent['workflowExecutionFailedEventAttributes']>['failure']>;

interface RegistrationStory {
  workflowId: string;
  runId: string;
  type: string;
  status: string;
  started: string;
  closed?: string;
  imageIdentifier?: string;
  imageListIdentifier?: string;
  title?: string;
  /** Every stage it went through, with when it entered it. */
  stages: Array<{ at: string; stage: string }>;
  /** Why it failed (or was terminated or timed out), in one line. */
  failure?: string;
  /** The workflow of its image revision, when one ran it. */
  revision?: string;
  link: string;
}

/** `step acquireImage: GET … failed: HTTP 401 (check the token) [FetchError]`: the step and the innermost cause. */
function failureLine(failure: Failure): string {
  let step: string | undefined;
  let innermost: Failure = failure;
  for (let f: Failure | null | undefined = failure; f; f = f.cause) {
    step = f.activityFailureInfo?.activityType?.name ?? step;
    innermost = f;
  }
  const type = innermost.applicationFailureInfo?.type;
  return `${step ? `step ${step}: ` : ''}${innermost.message ?? 'failed'}${type ? ` [${type}]` : ''}`;
}

function stageOf(fields: Record<string, unknown> | null | undefined): string | undefined {
  const payload = fields?.[SA_STAGE.name];
  if (!payload) return undefined;
  const value = defaultPayloadConverter.fromPayload(payload as never) as unknown;
  return Array.isArray(value) ? String(value[0]) : String(value);
}

/** Reads a workflow's latest run: what it is, its stages, how it ended, and the children it started. */
async function readStory(
  client: Client,
  config: Config,
  workflowId: string,
): Promise<{ story: RegistrationStory; children: string[] }> {
  const handle = client.workflow.getHandle(workflowId);
  const described = await handle.describe();
  const sa = described.typedSearchAttributes;
  const story: RegistrationStory = {
    workflowId,
    runId: described.runId,
    type: described.type,
    status: described.status.name,
    started: described.startTime.toISOString(),
    closed: described.closeTime?.toISOString(),
    imageIdentifier: sa.get(SA_IMAGE_ID),
    imageListIdentifier: sa.get(SA_IMAGE_LIST_ID),
    title: sa.get(SA_IMAGE_TITLE),
    stages: [],
    revision: described.parentExecution?.workflowId ?? undefined,
    link: workflowUiLink(config.temporal, workflowId, described.runId),
  };
  const children: string[] = [];
  const history = await client.workflow.getHandle(workflowId, described.runId).fetchHistory();
  for (const event of history.events ?? []) {
    const at = optionalTsToDate(event.eventTime)?.toISOString() ?? '';
    const stage =
      stageOf(event.workflowExecutionStartedEventAttributes?.searchAttributes?.indexedFields) ??
      stageOf(event.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields);
    if (stage && stage !== story.stages.at(-1)?.stage) story.stages.push({ at, stage });
    const child = event.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId;
    if (child) children.push(child);
    const failed = event.workflowExecutionFailedEventAttributes?.failure;
    if (failed) story.failure = failureLine(failed);
    const terminated = event.workflowExecutionTerminatedEventAttributes;
    if (terminated) story.failure = `terminated${terminated.reason ? `: ${terminated.reason}` : ''}`;
    if (event.workflowExecutionTimedOutEventAttributes) story.failure = 'timed out';
  }
  return { story, children };
}

class RegistrationsShowCommand extends ConfiguredCommand {
  static override paths = [['registrations', 'show']];
  static override usage = Command.Usage({
    description: 'Print one registration: its stages, why it failed, and its Web UI link',
    details:
      'ID is a workflow id as `registrations` lists it: a registration (`register:…`), an expiry (`expire:…`), or an image revision (`image:…`), whose latest registration or expiry is shown.',
    examples: [
      [
        'Why did it fail?',
        '$0 registrations show register:synnefo-mycloud:<list>:<image>:<revision> --conf /etc/snf-vmcatcher/application.conf',
      ],
    ],
  });

  workflowId = Option.String({ name: 'ID' });
  json = Option.Boolean('--json', false, { description: 'Print it as JSON' });

  async run(): Promise<number> {
    const config = await this.config();
    const { client, connection } = await connectTemporal(config.temporal);
    try {
      let read;
      try {
        read = await readStory(client, config, this.workflowId);
      } catch (err) {
        if (err instanceof WorkflowNotFoundError)
          return this.fail(`no workflow '${this.workflowId}' in namespace '${config.temporal.namespace}'`, EXIT.usage);
        throw err;
      }
      // An image revision's own story is short: show the registration (or expiry) it ran last.
      const lastChild = read.story.type === IMAGE_REVISION_WORKFLOW ? read.children.at(-1) : undefined;
      const story = lastChild ? { ...(await readStory(client, config, lastChild)).story } : read.story;
      if (this.json) {
        this.out(JSON.stringify(story, null, 2));
        return EXIT.ok;
      }
      if (lastChild) this.out(`Image revision ${this.workflowId} (${read.story.status}) ran ${lastChild}:`);
      this.out(`${story.type} ${story.workflowId}`);
      this.out(`Status: ${story.status}`);
      const image = story.title ?? story.imageIdentifier;
      if (image) this.out(`Image: ${image}${story.imageListIdentifier ? ` of ${story.imageListIdentifier}` : ''}`);
      this.out(`Started: ${story.started}${story.closed ? `, closed: ${story.closed}` : ''}`);
      if (story.revision) this.out(`Image revision: ${story.revision}`);
      this.out('Stages:');
      for (const { at, stage } of story.stages) this.out(`  ${at.slice(0, 19).replace('T', ' ')}  ${stage}`);
      if (story.failure) this.out(`Failure: ${story.failure}`);
      this.out(`Web UI: ${story.link}`);
      return EXIT.ok;
    } finally {
      await connection.close();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Starting failed registrations again

const RETRY_STATUSES = ['failed', 'terminated', 'timed-out'] as const;

class RegistrationsRetryCommand extends ConfiguredCommand {
  static override paths = [['registrations', 'retry']];
  static override usage = Command.Usage({
    description: 'Start again every failed registration that matches, once its cause is fixed',
    details:
      "For a credential fixed, a disk emptied, a tool repaired. Each registration (or expiry) runs again under the same workflow ids: its image revision's workflow is signalled again with the event it handled last, and starts the registration's id again, which finds an image an earlier attempt registered rather than adding a second. A registration whose latest run is no longer failed, or whose image a later event settled or is handling, is skipped with the reason. Cancelled registrations (undone by a later event) are never restarted. `--cloud` takes a target (`synnefo-<kamaki cloud>`, `glance-<name>`) or a cloud name.",
    examples: [
      [
        'Everything that failed in the last two days',
        '$0 registrations retry --since 2d --conf /etc/snf-vmcatcher/application.conf',
      ],
      [
        'What would restart, for one list on one cloud',
        '$0 registrations retry --image-list-identifier 0a1b2c… --cloud mycloud --dry-run',
      ],
    ],
  });

  status = Option.String('--status', 'failed', {
    validator: t.isEnum(RETRY_STATUSES),
    description: `Registrations that ended so (${RETRY_STATUSES.join(', ')}; default failed)`,
  });
  since = Option.String('--since', {
    validator: isDuration,
    description: 'Only those that ended within this long (e.g. 2d)',
  });
  imageListIdentifier = Option.String('--image-list-identifier', { description: 'Only this image list' });
  cloud = Option.String('--cloud', { description: 'Only registrations into this cloud' });
  dryRun = Option.Boolean('--dry-run', false, { description: 'Say what would be started again; start nothing' });

  async run(): Promise<number> {
    const config = await this.config();
    const query = registrationsQuery({
      status: this.status,
      imageListIdentifier: this.imageListIdentifier,
      closedSince: this.since === undefined ? undefined : new Date(Date.now() - DurationSchema.parse(this.since)),
      cloud: this.cloud,
    });
    const { client, connection } = await connectTemporal(config.temporal);
    try {
      // Every failed run is listed; one restart per workflow id (the newest run decides).
      const failed = new Map<string, FailedWorkflow>();
      for await (const wf of client.workflow.list({ query })) {
        if (failed.has(wf.workflowId)) continue;
        failed.set(wf.workflowId, {
          workflowId: wf.workflowId,
          runId: wf.runId,
          type: wf.type,
          taskQueue: wf.taskQueue,
          parent: wf.parentExecution?.workflowId ? { workflowId: wf.parentExecution.workflowId } : undefined,
        });
      }
      if (failed.size === 0) {
        this.say.note(`No ${this.status} registrations match (${query})`);
        return EXIT.ok;
      }
      const restarted = new Set<string>();
      let skipped = 0;
      for (const wf of failed.values()) {
        let plan;
        try {
          plan = await planRestart(client, wf);
        } catch (err) {
          // Its history (or its revision's) went out of the namespace's retention meanwhile.
          if (!(err instanceof WorkflowNotFoundError)) throw err;
          plan = { how: 'skip' as const, why: `no longer in Temporal (${err.message})` };
        }
        if (plan.how === 'skip') {
          skipped++;
          this.out(`skipped ${wf.workflowId}: ${plan.why}`);
          continue;
        }
        // A revision with a failed registration and a failed expiry is started again once.
        if (restarted.has(plan.workflowId)) continue;
        restarted.add(plan.workflowId);
        const via = plan.how === 'revision' ? ` through ${plan.workflowId}` : '';
        if (this.dryRun) {
          this.out(`would restart ${wf.workflowId}${via}`);
          continue;
        }
        const handle = await restart(client, plan);
        this.out(
          `restarted ${wf.workflowId}${via} (Web UI: ${workflowUiLink(config.temporal, handle.workflowId, handle.runId)})`,
        );
      }
      this.say.note(
        `${this.dryRun ? 'Would restart' : 'Restarted'} ${restarted.size} of ${failed.size} ${this.status} workflow(s)${skipped ? `; ${skipped} skipped` : ''}`,
      );
      return EXIT.ok;
    } finally {
      await connection.close();
    }
  }
}

export const registrationsCommands = [RegistrationsCommand, RegistrationsShowCommand, RegistrationsRetryCommand];
