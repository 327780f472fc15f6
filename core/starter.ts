import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { WorkflowIdConflictPolicy, WorkflowIdReusePolicy, type TypedSearchAttributes } from '@temporalio/common';
import { TypedSearchAttributes as SearchAttributes } from '@temporalio/common';
import type { Config } from './config.js';
import { assertActionable, eventAction, type ImageEvent } from './event.js';
import {
  EXPIRE_WORKFLOW,
  expireWorkflowId,
  REGISTER_WORKFLOW,
  registerWorkflowId,
  SA_IMAGE_ID,
  SA_IMAGE_LIST_ID,
  SA_STAGE,
  SA_VO,
  type RegistrationOptions,
} from './workflow-contract.js';

export type StartOutcome =
  /** A new workflow execution was started. */
  | 'started'
  /** A workflow with this id is running, or completed successfully: the event is absorbed. */
  | 'already-exists'
  /** The event needs no action (e.g. ProcessPrefix). */
  | 'ignored';

export interface StartResult {
  outcome: StartOutcome;
  workflowId?: string;
  workflowType?: string;
  handle?: WorkflowHandle;
}

function initialSearchAttributes(event: ImageEvent): TypedSearchAttributes {
  const pairs = [{ key: SA_STAGE, value: 'queued' }];
  if (event.imageId) pairs.push({ key: SA_IMAGE_ID, value: event.imageId });
  if (event.imageListId) pairs.push({ key: SA_IMAGE_LIST_ID, value: event.imageListId });
  if (event.vo) pairs.push({ key: SA_VO, value: event.vo });
  return new SearchAttributes(pairs);
}

/**
 * Starts the workflow an event calls for, idempotently: the id comes from the image's
 * identity, a running or successfully completed workflow with that id absorbs the event
 * (conflict policy FAIL, reported as 'already-exists'), and only a failed, cancelled or
 * terminated one may be run again (reuse policy ALLOW_DUPLICATE_FAILED_ONLY).
 *
 * Throws InvalidEventError when the event lacks what its action needs.
 */
export async function startWorkflowForEvent(
  client: Client,
  config: Config,
  event: ImageEvent,
  options: RegistrationOptions = {},
): Promise<StartResult> {
  const action = eventAction(event);
  if (action === 'ignore') return { outcome: 'ignored' };
  assertActionable(event);
  const workflowType = action === 'register' ? REGISTER_WORKFLOW : EXPIRE_WORKFLOW;
  const workflowId = action === 'register' ? registerWorkflowId(event) : expireWorkflowId(event);
  try {
    const handle = await client.workflow.start(workflowType, {
      taskQueue: config.temporal.taskQueue,
      workflowId,
      args: [{ event, options }],
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.FAIL,
      typedSearchAttributes: initialSearchAttributes(event),
      memo: { title: event.title ?? '', version: event.version ?? '', origin: event.origin },
    });
    return { outcome: 'started', workflowId, workflowType, handle };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      return { outcome: 'already-exists', workflowId, workflowType, handle: client.workflow.getHandle(workflowId) };
    }
    throw err;
  }
}
