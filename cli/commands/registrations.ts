import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { connectTemporal, workflowUiLink } from '../../core/temporal-client.js';
import {
  EXPIRE_WORKFLOW,
  REGISTER_WORKFLOW,
  IMAGE_REVISION_WORKFLOW,
  SA_IMAGE_ID,
  SA_IMAGE_LIST_ID,
  SA_STAGE,
  SA_VO,
  STAGES,
} from '../../core/workflow-contract.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

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

export interface RegistrationFilter {
  stage?: string;
  status?: (typeof STATUSES)[number];
  imageIdentifier?: string;
  imageListIdentifier?: string;
  vo?: string;
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
  return clauses.join(' AND ');
}

export class RegistrationsCommand extends ConfiguredCommand {
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
        const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
        for (const row of [header, ...table])
          this.out(
            row
              .map((cell, i) => cell.padEnd(widths[i]))
              .join('  ')
              .trimEnd(),
          );
      }
      return EXIT.ok;
    } finally {
      await connection.close();
    }
  }
}
