// Plain ESM (not transformed by jest), so it imports the compiled contract from dist/,
// which `npm test` builds first (pretest runs scripts/setup.sh).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { SEARCH_ATTRIBUTE_KEYS } from '../../dist/core/workflow-contract.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * One Temporal dev server for the whole run (not one per test file), started from the
 * project-local CLI that scripts/setup.sh builds. Tests reach it through TEMPORAL_ADDRESS.
 */
export default async function globalSetup() {
  const executable = process.env.SNF_VMCATCHER_TEMPORAL_CLI ?? path.join(root, '.tools/bin/temporal');
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: executable },
      searchAttributes: SEARCH_ATTRIBUTE_KEYS,
      // A worker stalled by a busy 2-core machine must not time out workflow tasks.
      extraArgs: ['--dynamic-config-value', 'history.defaultWorkflowTaskTimeout="60s"'],
    },
  });
  globalThis.__temporalEnv = env;
  process.env.TEMPORAL_ADDRESS = env.address;
  process.env.SNF_VMCATCHER_TEMPORAL_CLI = executable;
}
