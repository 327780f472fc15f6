import type { Client, WorkflowHandle } from '@temporalio/client';
import { waitForChild } from '../../cli/progress.js';

/**
 * The registerImage workflow that an image revision's workflow (the id `register-now --no-wait`
 * prints, or the bridge delivers to) runs, once it has started it.
 */
export async function registrationOf(
  client: Client,
  revisionWorkflowId: string,
  timeoutMs = 60_000,
): Promise<WorkflowHandle> {
  const parent = client.workflow.getHandle(revisionWorkflowId);
  const child = await Promise.race([
    waitForChild(parent, 'register'),
    new Promise<never>((_, reject) =>
      setTimeout(
        () => reject(new Error(`no registration started by ${revisionWorkflowId} within ${timeoutMs} ms`)),
        timeoutMs,
      ).unref(),
    ),
  ]);
  if (!child) throw new Error(`${revisionWorkflowId} closed without running a registration`);
  return child;
}
