import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { projectRoot } from '../core/package-info.js';

/**
 * The compiled modules (dist/), or the sources when this runs from them (tests, tsx). Found from
 * the project's root, not from this file: in the CLI's bundle (dist/bundle/) this code sits in a
 * chunk beside the others, not in dist/worker/.
 */
const compiled = fileURLToPath(import.meta.url).endsWith('.ts') ? projectRoot() : path.join(projectRoot(), 'dist');

/** Where `npm run build` writes the pre-bundled workflow code; the worker starts faster with it. */
export const WORKFLOW_BUNDLE = path.join(compiled, 'worker', 'workflow-bundle.js');
export const WORKFLOWS_PATH = path.join(compiled, 'workflows', 'index.js');
/** Reports how each workflow ended to the worker's metrics (workflows/outcomes.ts). */
export const WORKFLOW_INTERCEPTORS = path.join(compiled, 'workflows', 'outcomes.js');

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
