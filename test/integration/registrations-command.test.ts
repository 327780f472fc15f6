import { Client, Connection } from '@temporalio/client';
import { TypedSearchAttributes } from '@temporalio/common';
import { registrationsQuery } from '../../cli/commands/registrations.js';
import { parseConfig } from '../../core/config.js';
import { eventFromFlat } from '../../core/event.js';
import { planRestart, restart, startWorkflowForEvent } from '../../core/starter.js';
import { imageSearchAttributes, REGISTER_WORKFLOW, SA_CLOUD } from '../../core/workflow-contract.js';
import { registrationSite } from '../../clouds/index.js';
import { runCli } from '../support/cli.js';
import { uniqueTaskQueue } from '../support/service-process.js';

/** Registrations and expiries, and the image revisions whose work no worker has taken up yet. */
const ALL =
  "(WorkflowType IN ('registerImage', 'expireImage') OR (WorkflowType = 'imageRevision' AND ImageStage = 'queued'))";

describe('registrationsQuery', () => {
  test.each([
    [{}, ALL],
    [{ status: 'failed' as const }, `${ALL} AND ExecutionStatus = 'Failed'`],
    [
      { stage: 'acquiring', imageListIdentifier: "o'brien" },
      `${ALL} AND ImageStage = 'acquiring' AND ImageListIdentifier = 'o\\'brien'`,
    ],
    [
      { status: 'failed' as const, closedSince: new Date('2026-01-01T00:00:00Z'), cloud: 'site' },
      `${ALL} AND ExecutionStatus = 'Failed' AND CloseTime >= '2026-01-01T00:00:00.000Z' AND ` +
        "(WorkflowId STARTS_WITH 'register:synnefo-site:' OR WorkflowId STARTS_WITH 'expire:synnefo-site:' OR " +
        "WorkflowId STARTS_WITH 'image:synnefo-site:' OR WorkflowId STARTS_WITH 'register:glance-site:' OR " +
        "WorkflowId STARTS_WITH 'expire:glance-site:' OR WorkflowId STARTS_WITH 'image:glance-site:')",
    ],
    [
      { cloud: 'glance-openstack' },
      `${ALL} AND (WorkflowId STARTS_WITH 'register:glance-openstack:' OR ` +
        "WorkflowId STARTS_WITH 'expire:glance-openstack:' OR WorkflowId STARTS_WITH 'image:glance-openstack:')",
    ],
  ])('%j → %s', (filter, query) => {
    expect(registrationsQuery(filter)).toBe(query);
  });
});

describe('registrations', () => {
  test('lists the workflows of an image list with their stage, filtered through the search attributes', async () => {
    const taskQueue = uniqueTaskQueue('regs');
    const listId = `regs-list-${taskQueue}`;
    const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    try {
      const client = new Client({ connection });
      const config = parseConfig({ temporal: { taskQueue } }, 'test');
      // No worker polls this task queue: the workflows stay queued, as during an outage of the workers.
      for (const imageId of ['img-a', 'img-b']) {
        const event = eventFromFlat(
          {
            VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
            VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
            VMCATCHER_EVENT_HV_URI: `https://example.org/${imageId}.qcow2`,
            VMCATCHER_EVENT_VO: 'vo.example.org',
          },
          'image-list',
        );
        await startWorkflowForEvent(client, config, event, {}, registrationSite(config));
      }
      let lines: string[] = [];
      for (let i = 0; i < 40 && lines.length < 2; i++) {
        const result = await runCli(['registrations', '--image-list-identifier', listId, '--json']);
        expect(result.exitCode).toBe(0);
        lines = result.stdout.trim().split('\n').filter(Boolean);
        if (lines.length < 2) await new Promise((r) => setTimeout(r, 250));
      }
      const rows = lines.map((l) => JSON.parse(l));
      expect(rows.map((r) => r.imageIdentifier).sort()).toEqual(['img-a', 'img-b']);
      expect(rows[0]).toMatchObject({
        type: 'imageRevision',
        status: 'RUNNING',
        stage: 'queued',
        imageListIdentifier: listId,
        vo: 'vo.example.org',
      });

      const table = await runCli(['registrations', '--image-list-identifier', listId, '--stage', 'queued']);
      expect(table.stdout.split('\n')[0]).toMatch(/^STATUS\s+STAGE\s+IMAGE\s+IMAGE LIST\s+STARTED\s+WORKFLOW ID$/);
      expect(table.stdout).toContain('img-a');
      const none = await runCli(['registrations', '--image-list-identifier', listId, '--stage', 'failed']);
      expect(none.stdout).toBe('');
      expect(none.stderr).toContain('No registrations match');
      for (const r of rows) await client.workflow.getHandle(r.workflowId).terminate('test cleanup');
    } finally {
      await connection.close();
    }
  });

  test('retry of a registration started without an image revision workflow keeps its cloud (ImageCloud)', async () => {
    const taskQueue = uniqueTaskQueue('regs-direct');
    const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    try {
      const client = new Client({ connection });
      const event = eventFromFlat(
        {
          VMCATCHER_EVENT_IL_DC_IDENTIFIER: `direct-list-${taskQueue}`,
          VMCATCHER_EVENT_DC_IDENTIFIER: 'img-direct',
          VMCATCHER_EVENT_HV_URI: 'https://example.org/img-direct.qcow2',
        },
        'image-list',
      );
      // As a registration started before revision workflows existed: registerImage on its own.
      // No worker polls the queue; terminated, it is one that `registrations retry` restarts.
      const workflowId = `register:glance-two:${taskQueue}`;
      const first = await client.workflow.start(REGISTER_WORKFLOW, {
        taskQueue,
        workflowId,
        args: [{ event, options: {} }],
        typedSearchAttributes: new TypedSearchAttributes(imageSearchAttributes(event, 'queued', 'glance-two')),
      });
      await first.terminate('test: a failed registration');
      const plan = await planRestart(client, {
        workflowId,
        runId: first.firstExecutionRunId,
        type: REGISTER_WORKFLOW,
        taskQueue,
      });
      expect(plan).toMatchObject({ how: 'direct', target: 'glance-two' });
      if (plan.how === 'skip') throw new Error(plan.why);
      const again = await restart(client, plan);
      expect(again.runId).not.toBe(first.firstExecutionRunId);
      const described = await client.workflow.getHandle(workflowId, again.runId).describe();
      expect(described.typedSearchAttributes.get(SA_CLOUD)).toBe('glance-two');
      await client.workflow.getHandle(workflowId).terminate('test cleanup');
    } finally {
      await connection.close();
    }
  });
});
