import { cloudTargets } from '../clouds/index.js';
import type { PrepareInput, PublishInput } from '../clouds/target.js';
import { acquireImage } from './acquire.js';
import { convertToRaw } from './convert.js';
import { inspectFile, inspectImage } from './inspect.js';
import { cancellationSignal } from '../runtime/context.js';
import type { ActivityDeps } from '../runtime/deps.js';
import { whileHeartbeating } from '../runtime/heartbeats.js';
import type { AcquireInput, ConvertInput, InspectInput } from './types.js';
import { removeWorkDir, withWorkDir } from './workspace.js';

/**
 * The activities of a host's own task queue: every step that reads or writes the image's files,
 * so the whole sequence of one image runs on the machine that holds them. Get the image, tell its
 * format, turn it into a raw disk, prepare and publish it on the cloud, remove the work folder.
 * The worker classifies their errors (worker/failures.ts); they also work outside a worker.
 */
export function createHostActivities(deps: ActivityDeps) {
  const clouds = cloudTargets(deps);
  return {
    acquireImage: (input: AcquireInput) => acquireImage(deps, input),
    // The short steps heartbeat too: a host lost in the middle of one is found out within the
    // heartbeat timeout, not at the end of the step's start-to-close timeout.
    inspectImage: (input: InspectInput) => whileHeartbeating({ step: 'inspect' }, () => inspectImage(deps, input)),
    /**
     * Turns the image into a disk the cloud takes: raw, or a qcow2 kept as it is when the cloud
     * takes qcow2: the formats of the registration's cloud, as its host claim carried them (absent in
     * inputs recorded before: the site's one cloud decides here, on the worker).
     */
    convertToRaw: (input: ConvertInput) => convertToRaw(deps, input, input.diskFormats ?? clouds.of({}).diskFormats),
    prepareImage: (input: PrepareInput) => clouds.of(input.options).prepare(input),
    /**
     * Uploads and registers on whatever cloud is configured. The name is the one workflow
     * histories record (it was Synnefo's kamaki step first), kept so that running workflows replay.
     */
    registerWithKamaki: async (input: PublishInput) =>
      clouds.of(input.options).publish({ ...input, format: input.format ?? (await detectedFormat(deps, input.path)) }),
    /** Removes the workflow's work folder, whatever state a failed or finished attempt left it in. */
    cleanupWorkspace: (input: { workflowId: string }) =>
      whileHeartbeating({ step: 'remove the work folder' }, () => cleanupWorkspace(deps, input)),
  };
}

export type HostActivities = ReturnType<typeof createHostActivities>;

/** The format of a file to publish whose input did not say it (recorded before it was passed): detected again. */
async function detectedFormat({ config }: ActivityDeps, file: string): Promise<string> {
  const { format } = await inspectFile(
    { path: file },
    { timeoutMs: config.worker.toolTimeoutMs, signal: cancellationSignal() },
  );
  return format;
}

/**
 * Takes the folder like any step: an attempt that timed out and is still writing here is stopped
 * (and its open files closed) before the folder goes, so none of it outlives the clean-up.
 */
async function cleanupWorkspace({ config, logger }: ActivityDeps, input: { workflowId: string }): Promise<void> {
  await withWorkDir(config, input.workflowId, async ({ dir }) => {
    await removeWorkDir(config, dir);
    logger.info({ workDir: dir }, 'work folder removed');
  });
}
