import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  defineQuery,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { createImagePipelineActivities } from '../activities/image-pipeline.js';
import type { createSynnefoActivities } from '../activities/synnefo.js';
import type { HostClaim } from '../worker/host-types.js';
import type { WorkerOwnActivities } from '../worker/own-activities.js';
import {
  PROGRESS_QUERY,
  SA_STAGE,
  type Progress,
  type RegisterImageInput,
  type RegisterImageResult,
  type Stage,
} from '../core/workflow-contract.js';

type ImagePipelineActivities = ReturnType<typeof createImagePipelineActivities>;
type SynnefoActivities = ReturnType<typeof createSynnefoActivities>;

export const progressQuery = defineQuery<Progress>(PROGRESS_QUERY);

/** Steps that need no file run on the shared task queue, on any worker. */
const shared = proxyActivities<WorkerOwnActivities & Pick<SynnefoActivities, 'findRegisteredImage'>>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10 },
});

/** The test handler fails a bounded number of times, then the workflow fails (README: handlers). */
const throwing = proxyActivities<WorkerOwnActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 1, maximumAttempts: 3 },
});

/** How many hosts a registration may move across when the host holding its files disappears. */
const MAX_HOSTS = 3;

type HostActivities = ImagePipelineActivities & Pick<SynnefoActivities, 'prepareImage' | 'registerWithKamaki'>;

function hostActivities(claim: HostClaim, timeout: number, heartbeat = true): HostActivities {
  const options: ActivityOptions = {
    taskQueue: claim.taskQueue,
    startToCloseTimeout: timeout,
    // A step waiting longer than this for its worker means the host is gone: move on (see loop below).
    scheduleToStartTimeout: claim.scheduleToStartTimeoutMs,
    heartbeatTimeout: heartbeat ? claim.heartbeatTimeoutMs : undefined,
    retry: {
      initialInterval: claim.retryInitialIntervalMs,
      maximumInterval: claim.retryMaximumIntervalMs,
      backoffCoefficient: 2,
      maximumAttempts: claim.retryMaximumAttempts,
    },
  };
  return proxyActivities<HostActivities>(options);
}

function isHostLost(err: unknown): boolean {
  return (
    err instanceof ActivityFailure &&
    err.cause instanceof TimeoutFailure &&
    err.cause.timeoutType === TimeoutType.SCHEDULE_TO_START
  );
}

/**
 * Registers one image: acquire (copy from vmcatcher's cache or download and verify), detect the
 * format, convert to raw, prepare with snf-mkimage, upload and register with kamaki, clean up.
 * The workflow id is the image's identity (core/workflow-contract.ts), so a repeated event joins
 * or is absorbed by this execution instead of registering the image twice.
 */
export async function registerImage(input: RegisterImageInput): Promise<RegisterImageResult> {
  const { event, options } = input;
  const handler = options.handler ?? 'registerImage';
  let progress: Progress = { stage: 'queued' };
  setHandler(progressQuery, () => progress);
  const stage = (next: Stage, step?: string) => {
    progress = { ...progress, stage: next, step };
    upsertSearchAttributes([{ key: SA_STAGE, value: next }]);
  };

  try {
    if (handler === 'JustLogHandler') {
      await shared.logEvent({ event, handler });
      stage('done');
      return { handler };
    }
    if (handler === 'ThrowingHandler') {
      await throwing.throwOnPurpose({ event });
      throw ApplicationFailure.nonRetryable('ThrowingHandler returned without throwing', 'HandlerBug');
    }

    const existing = await shared.findRegisteredImage({ event, options });
    if (existing) {
      log.info('image already registered; nothing to do', { imageId: existing.imageId });
      stage('done');
      return { handler, imageId: existing.imageId, reused: true, name: existing.name, location: existing.location, properties: existing.properties };
    }

    for (let host = 1; ; host++) {
      const claim = await shared.claimHost();
      try {
        return await registerOnHost(input, claim, stage, (p) => (progress = { ...progress, ...p }));
      } catch (err) {
        if (isHostLost(err) && host < MAX_HOSTS) {
          log.warn('the worker holding this image stopped answering; starting over on another host', { host: claim.hostname });
          continue;
        }
        throw err;
      }
    }
  } catch (err) {
    if (!isCancellation(err)) stage('failed', progress.step);
    throw err;
  }
}

async function registerOnHost(
  { event, options }: RegisterImageInput,
  claim: HostClaim,
  stage: (next: Stage, step?: string) => void,
  note: (p: Partial<Progress>) => void,
): Promise<RegisterImageResult> {
  const download = hostActivities(claim, claim.downloadTimeoutMs);
  const tools = hostActivities(claim, claim.toolTimeoutMs);
  const quick = hostActivities(claim, 5 * 60_000, false);
  const { workflowId } = workflowInfo();
  try {
    stage('acquiring', `download ${event.uri ?? event.filename ?? ''}`.trim());
    const acquired = await download.acquireImage({
      workflowId,
      event,
      insecureSsl: options.insecureSsl,
      credentialName: options.credentialName,
    });
    const { workDir } = acquired;
    note({ bytesDone: acquired.bytes, bytesTotal: acquired.bytes });

    stage('inspecting');
    const info = await quick.inspectImage({ path: acquired.path, formatHint: options.formatHint ?? event.format, fileName: acquired.fileName });

    stage('converting', `${info.format} → raw`);
    const raw = await tools.convertToRaw({ workflowId, path: acquired.path, workDir, format: info.format });

    stage('preparing');
    const prepared = await tools.prepareImage({ rawPath: raw.path, workDir, event, options });

    stage('registering');
    const registered = await tools.registerWithKamaki({ path: prepared.path, event, options, metadata: prepared.metadata });

    stage('done');
    return {
      handler: 'registerImage',
      imageId: registered.imageId,
      reused: registered.reused,
      name: registered.name,
      location: registered.location,
      format: info.format,
      properties: registered.properties,
    };
  } finally {
    // Whatever happened (done, failed, cancelled), the work folder goes: a failed step leaves no
    // files behind. A host that vanished cannot be reached, so this is best effort.
    await CancellationScope.nonCancellable(() => quick.cleanupWorkspace({ workflowId })).catch((err: unknown) =>
      log.warn('could not clean up the work folder', { host: claim.hostname, error: String(err) }),
    );
  }
}
