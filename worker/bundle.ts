import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode } from '@temporalio/worker';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where `npm run build` writes the pre-bundled workflow code; the worker starts faster with it. */
export const WORKFLOW_BUNDLE = path.join(here, 'workflow-bundle.js');
export const WORKFLOWS_PATH = path.join(here, '../workflows/index.js');

async function main(): Promise<void> {
  const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: undefined });
  await mkdir(path.dirname(WORKFLOW_BUNDLE), { recursive: true });
  await writeFile(WORKFLOW_BUNDLE, code);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
