import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where `npm run build` writes the pre-bundled workflow code; the worker starts faster with it. */
export const WORKFLOW_BUNDLE = path.join(here, 'workflow-bundle.js');
export const WORKFLOWS_PATH = path.join(here, '../workflows/index.js');
/** Reports how each workflow ended to the worker's metrics (workflows/outcomes.ts). */
export const WORKFLOW_INTERCEPTORS = path.join(here, '../workflows/outcomes.js');

async function main(): Promise<void> {
  // Only problems are worth printing at build time.
  const { code } = await bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    workflowInterceptorModules: [WORKFLOW_INTERCEPTORS],
    logger: new DefaultLogger('WARN'),
  });
  await mkdir(path.dirname(WORKFLOW_BUNDLE), { recursive: true });
  await writeFile(WORKFLOW_BUNDLE, code);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
