import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { acquireImage } from './acquire.js';
import { cancellationSignal } from './context.js';
import { convertToRaw } from './convert.js';
import { classified } from './failures.js';
import { inspectImage } from './inspect.js';
import type { AcquireInput, AcquiredImage, ConvertInput, ImageFormatInfo, InspectInput, RawImage } from './types.js';
import { removeWorkDir, withWorkDir } from './workspace.js';

export type { AcquireInput, AcquiredImage, ConvertInput, ImageFormatInfo, InspectInput, RawImage } from './types.js';

export interface ImagePipelineDeps {
  config: Config;
  logger: Logger;
}

export interface ImagePipelineActivities {
  acquireImage(input: AcquireInput): Promise<AcquiredImage>;
  inspectImage(input: InspectInput): Promise<ImageFormatInfo>;
  convertToRaw(input: ConvertInput): Promise<RawImage>;
  /** Removes the workflow's work folder, whatever state a failed or finished attempt left it in. */
  cleanupWorkspace(input: { workflowId: string }): Promise<void>;
}

/**
 * The file-bound activities of a registration: get the image, tell its format, turn it into
 * a raw disk, and remove the work folder. They run on the host's own task queue (the files
 * live there). Every error leaves through `classified`, so Temporal sees retryable or
 * non-retryable failures. They also work outside a worker (the `transform` command).
 */
export function createImagePipelineActivities(deps: ImagePipelineDeps): ImagePipelineActivities {
  return {
    acquireImage: classified((input: AcquireInput) => acquireImage(deps, input)),
    inspectImage: classified((input: InspectInput) =>
      inspectImage(input, { timeoutMs: deps.config.worker.toolTimeoutMs, signal: cancellationSignal() }),
    ),
    convertToRaw: classified((input: ConvertInput) => convertToRaw(deps, input)),
    // Takes the folder like any step: an attempt that timed out and is still writing here is
    // stopped (and its open files closed) before the folder goes, so none of it outlives the clean-up.
    cleanupWorkspace: classified((input: { workflowId: string }) =>
      withWorkDir(deps.config, input.workflowId, async ({ dir }) => {
        await removeWorkDir(deps.config, dir);
        deps.logger.info({ workDir: dir }, 'work folder removed');
      }),
    ),
  };
}
