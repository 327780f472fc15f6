import { WorkflowNotFoundError, type Client, type WorkflowHandle } from '@temporalio/client';
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

/**
 * A workflow by the id something else will start it under (a sync names the registerImage
 * workflow that the image revision's workflow starts a moment after the sync delivered it),
 * once it has started.
 */
export async function startedWorkflow(client: Client, workflowId: string, timeoutMs = 60_000): Promise<WorkflowHandle> {
  const handle = client.workflow.getHandle(workflowId);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await handle.describe();
      return handle;
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      if (Date.now() > deadline) throw new Error(`${workflowId} did not start within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
