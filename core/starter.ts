import type { Client, WorkflowHandle } from '@temporalio/client';
import { TypedSearchAttributes, WorkflowIdConflictPolicy, WorkflowIdReusePolicy } from '@temporalio/common';
import { siteCloud, type Config } from './config.js';
import { assertActionable, eventAction, type ImageEvent } from './event.js';
import {
  childWorkflowId,
  EXPIRE_WORKFLOW,
  IMAGE_EVENT_SIGNAL,
  IMAGE_REVISION_WORKFLOW,
  imageDetails,
  imageRevisionWorkflowId,
  imageSearchAttributes,
  imageSummary,
  REGISTER_WORKFLOW,
  registrationTarget,
  type ImageEventSignal,
  type RegistrationOptions,
} from './workflow-contract.js';

export type StartOutcome =
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
}

/**
 * Delivers an event to the workflow of its image revision and target (signal-with-start): it
 * starts one when none runs, and otherwise the running one takes the event into account. That
 * workflow runs registerImage or expireImage, so a repeated event never registers an image twice
 * and the cloud follows the last event of the revision.
 *
 * Throws InvalidEventError when the event lacks what its action needs.
 */
export async function startWorkflowForEvent(
  client: Client,
  config: Config,
  event: ImageEvent,
  options: RegistrationOptions = {},
): Promise<StartResult> {
  const kind = eventAction(event);
  if (kind === 'ignore') return { outcome: 'ignored' };
  assertActionable(event);
  const action = kind === 'register' ? 'register' : 'expire';
  const target = registrationTarget(options, siteCloud(config));
  const workflowId = imageRevisionWorkflowId(event, action, target);
  const signal: ImageEventSignal = { action, event, options, target };
  const handle = await client.workflow.signalWithStart(IMAGE_REVISION_WORKFLOW, {
    taskQueue: config.temporal.taskQueue,
    workflowId,
    args: [],
    signal: IMAGE_EVENT_SIGNAL,
    signalArgs: [signal],
    workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    typedSearchAttributes: new TypedSearchAttributes(imageSearchAttributes(event, 'queued')),
    // The Web UI's User Metadata: which image this is, without opening the input.
    staticSummary: imageSummary('revision', event, target),
    staticDetails: imageDetails(event, target, options),
    memo: { title: event.title ?? '', version: event.version ?? '', origin: event.origin },
  });
  return {
    outcome: 'delivered',
    workflowId,
    childWorkflowId: childWorkflowId(event, action, target),
    childWorkflowType: action === 'register' ? REGISTER_WORKFLOW : EXPIRE_WORKFLOW,
    handle,
  };
}
