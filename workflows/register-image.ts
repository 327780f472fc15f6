import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  defineQuery,
  isCancellation,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityInterfaceFor,
  type ActivityOptions,
} from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { ControlActivities } from '../activities/control.js';
import type { HostActivities } from '../activities/host.js';
import type { SharedActivities } from '../activities/shared.js';
import {
  convertedFormat,
  OUT_OF_SPACE,
  PROGRESS_QUERY,
  SA_STAGE,
  type HostClaim,
  type Progress,
  type ImageRequest,
  type RegisterImageResult,
  type Stage,
} from '../core/workflow-contract.js';

export const progressQuery = defineQuery<Progress>(PROGRESS_QUERY);

/**
 * Steps that need no file run on the shared task queue, on any worker. They are short, or
 * heartbeat (findRegisteredImage): a worker that dies holding one is noticed after the heartbeat
 * timeout, not after the five minutes the step may take, and another worker runs it again.
 */
const shared = proxyActivities<SharedActivities>({
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10 },
});

/** The test handler fails a bounded number of times, then the workflow fails (README: handlers). */
const throwing = proxyActivities<SharedActivities>({
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 1, maximumAttempts: 3 },
});

/** How many hosts a registration may move across when the host holding its files disappears. */
const MAX_HOSTS = 3;

/**
 * A host-queue step. Its schedule-to-start timeout detects a host that is gone, not one that is
 * busy: the image holds one of the host's slots (see onHost), and the host queue has as many task
 * slots as the host has image slots, so a holder's step never queues behind other images' steps.
 * Every host step heartbeats, the short ones too: its heartbeat timeout detects a host lost while
 * the step runs.
 */
function hostActivities(claim: HostClaim, timeout: number): ActivityInterfaceFor<HostActivities> {
  const options: ActivityOptions = {
    taskQueue: claim.taskQueue,
    startToCloseTimeout: timeout,
    scheduleToStartTimeout: claim.scheduleToStartTimeoutMs,
    heartbeatTimeout: claim.heartbeatTimeoutMs,
    retry: {
      initialInterval: claim.retryInitialIntervalMs,
      maximumInterval: claim.retryMaximumIntervalMs,
      backoffCoefficient: 2,
      maximumAttempts: claim.retryMaximumAttempts,
    },
  };
  return proxyActivities<HostActivities>(options);
}

/**
 * The host's control queue. Waiting for a slot may take hours behind a dozen large images, so it
 * has no time limit of its own; it heartbeats, and its schedule-to-start timeout (the control
 * worker always has free task slots) says whether the host is alive.
 */
function controlActivities(claim: HostClaim): ActivityInterfaceFor<ControlActivities> {
  return proxyActivities<ControlActivities>({
    taskQueue: claim.controlQueue,
    startToCloseTimeout: '3650 days',
    scheduleToStartTimeout: claim.scheduleToStartTimeoutMs,
    heartbeatTimeout: claim.heartbeatTimeoutMs,
    retry: {
      initialInterval: claim.retryInitialIntervalMs,
      maximumInterval: claim.retryMaximumIntervalMs,
      backoffCoefficient: 2,
    },
  });
}

function isHostLost(err: unknown): boolean {
  return (
    err instanceof ActivityFailure &&
    err.cause instanceof TimeoutFailure &&
    err.cause.timeoutType === TimeoutType.SCHEDULE_TO_START
  );
}

function failureType(err: unknown): string | undefined {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure
    ? (err.cause.type ?? undefined)
    : undefined;
}

/**
 * Registers one image: acquire (copy from vmcatcher's cache or download and verify), detect the
 * format, convert it to a format the cloud takes, prepare it for the cloud (Synnefo: snf-mkimage),
 * upload and register it (Synnefo: kamaki; Glance: the Images API), clean up.
 * The workflow id is the image's identity (core/workflow-contract.ts), so a repeated event joins
 * or is absorbed by this execution instead of registering the image twice.
 */
export async function registerImage(input: ImageRequest): Promise<RegisterImageResult> {
  const { event, options } = input;
  const handler = options.handler ?? 'registerImage';
  let progress: Progress = { stage: 'queued' };
  setHandler(progressQuery, () => progress);
  const stage = (next: Stage, step?: string) => {
    progress = { ...progress, stage: next, step };
    upsertSearchAttributes([{ key: SA_STAGE, value: next }]);
    // The Web UI's User Metadata tab shows it as Current Details.
    setCurrentDetails(`Stage **${next}**${step ? `: ${step}` : ''}`);
  };

  try {
    if (handler === 'JustLogHandler') {
      await shared.logEvent.executeWithOptions({ summary: `log the event (${handler})` }, [{ event, handler }]);
      stage('done');
      return { handler };
    }
    if (handler === 'ThrowingHandler') {
      await throwing.throwOnPurpose.executeWithOptions({ summary: 'fail on purpose (ThrowingHandler)' }, [{ event }]);
      throw ApplicationFailure.nonRetryable('ThrowingHandler returned without throwing', 'HandlerBug');
    }

    const existing = await shared.findRegisteredImage.executeWithOptions(
      { summary: 'look for this revision on the cloud' },
      [{ event, options }],
    );
    if (existing) {
      log.info('image already registered; nothing to do', { imageId: existing.imageId });
      stage('done');
      return {
        handler,
        imageId: existing.imageId,
        reused: true,
        name: existing.name,
        location: existing.location,
        properties: existing.properties,
      };
    }

    for (let host = 1; ; host++) {
      // The claim carries what the registration's cloud takes (its disk formats).
      const claim = await shared.claimHost.executeWithOptions({ summary: 'pick a host for the files' }, [{ options }]);
      try {
        return await onHost(input, claim, stage, (p) => (progress = { ...progress, ...p }));
      } catch (err) {
        if (isHostLost(err) && host < MAX_HOSTS) {
          log.warn('the worker holding this image stopped answering; starting over on another host', {
            host: claim.hostname,
          });
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

type StageSetter = (next: Stage, step?: string) => void;

/** Takes one of the host's slots, runs the file-bound steps there, and gives the slot back. */
/**
 * Runs `work`, then `tidyUp` on the same host however `work` ended (done, failed, cancelled),
 * best effort and not cancellable, unless the host is gone: waiting for a host that does not
 * answer would only delay the move to another one (its worker sweeps up if it ever comes back).
 */
async function thenOnHost<T>(
  claim: HostClaim,
  what: string,
  work: () => Promise<T>,
  tidyUp: () => Promise<unknown>,
): Promise<T> {
  let hostLost = false;
  try {
    return await work();
  } catch (err) {
    hostLost = isHostLost(err);
    throw err;
  } finally {
    if (!hostLost) {
      await CancellationScope.nonCancellable(tidyUp).catch((err: unknown) =>
        log.warn(`could not ${what}`, { host: claim.hostname, error: String(err) }),
      );
    }
  }
}

async function onHost(
  input: ImageRequest,
  claim: HostClaim,
  stage: StageSetter,
  note: (p: Partial<Progress>) => void,
): Promise<RegisterImageResult> {
  const control = controlActivities(claim);
  const { workflowId } = workflowInfo();
  stage('waiting-for-host', `waiting for a slot on ${claim.hostname}`);
  // Its revision (the bytes its checksum names): the registrations of one revision into several clouds share a slot.
  const { event } = input;
  const revision = event.checksumSha512 ?? event.checksumSha256;
  await control.acquireHostSlot.executeWithOptions({ summary: `wait for a slot on ${claim.hostname}` }, [
    revision ? { workflowId, revision } : { workflowId },
  ]);
  return thenOnHost(
    claim,
    'give the host slot back',
    () => registerOnHost(input, claim, stage, note),
    () =>
      control.releaseHostSlot.executeWithOptions({ summary: `give the slot on ${claim.hostname} back` }, [
        { workflowId },
      ]),
  );
}

/**
 * Runs a host step; when the host's disk has not enough free space for it, waits (stage
 * waiting-for-disk) and tries again, up to `diskWaitMaxMs`. A step that can never fit
 * (DiskTooSmallError) fails like any other non-retryable failure.
 */
async function withDiskWait<T>(
  claim: HostClaim,
  stage: StageSetter,
  current: () => Progress,
  run: () => Promise<T>,
): Promise<T> {
  let waited = 0;
  for (;;) {
    try {
      return await run();
    } catch (err) {
      const type = failureType(err);
      if (type !== OUT_OF_SPACE) throw err;
      const message = (err as ActivityFailure).cause?.message ?? String(err);
      if (waited + claim.diskWaitIntervalMs > claim.diskWaitMaxMs) {
        throw ApplicationFailure.nonRetryable(
          `gave up after waiting ${claim.diskWaitMaxMs} ms for disk space (worker.diskWaitMaxMs): ${message}`,
          OUT_OF_SPACE,
        );
      }
      const resume = current();
      log.warn('not enough disk space on this host; waiting', { host: claim.hostname, message });
      stage('waiting-for-disk', message);
      await sleep(claim.diskWaitIntervalMs);
      waited += claim.diskWaitIntervalMs;
      stage(resume.stage, resume.step);
    }
  }
}

async function registerOnHost(
  { event, options }: ImageRequest,
  claim: HostClaim,
  stage: StageSetter,
  note: (p: Partial<Progress>) => void,
): Promise<RegisterImageResult> {
  const download = hostActivities(claim, claim.downloadTimeoutMs);
  const tools = hostActivities(claim, claim.toolTimeoutMs);
  // Short steps, heartbeating (a lost host is found out at its heartbeat timeout).
  const quick = hostActivities(claim, 5 * 60_000);
  const { workflowId } = workflowInfo();
  let current: Progress = { stage: 'queued' };
  const step: StageSetter = (next, description) => {
    current = { stage: next, step: description };
    stage(next, description);
  };
  const onDisk = <T>(run: () => Promise<T>) => withDiskWait(claim, stage, () => current, run);
  // Whatever happens, the work folder goes: a failed step leaves no files behind.
  return thenOnHost(
    claim,
    'clean up the work folder',
    async () => {
      const source = `${event.uri ? 'download' : 'copy'} ${event.uri ?? event.filename ?? ''}`.trim();
      step('acquiring', source);
      const acquired = await onDisk(() =>
        download.acquireImage.executeWithOptions({ summary: source }, [
          { workflowId, event, insecureSsl: options.insecureSsl, credentialName: options.credentialName },
        ]),
      );
      const { workDir } = acquired;
      note({ bytesDone: acquired.bytes, bytesTotal: acquired.bytes });

      step('inspecting');
      const info = await quick.inspectImage.executeWithOptions(
        { summary: `detect the format of ${acquired.fileName}` },
        [{ path: acquired.path, formatHint: options.formatHint ?? event.format, fileName: acquired.fileName }],
      );

      const output = convertedFormat(info.format, claim.diskFormats ?? ['raw']);
      const conversion = `${info.format} → ${output}${output === info.format ? ' (kept)' : ''}`;
      step('converting', conversion);
      const raw = await onDisk(() =>
        tools.convertToRaw.executeWithOptions({ summary: `convert ${conversion}` }, [
          { workflowId, path: acquired.path, workDir, format: info.format, diskFormats: claim.diskFormats },
        ]),
      );

      step('preparing');
      const prepared = await onDisk(() =>
        tools.prepareImage.executeWithOptions({ summary: 'prepare the image' }, [
          { rawPath: raw.path, workDir, event, options },
        ]),
      );

      step('registering');
      // registerWithKamaki: the name histories record; it uploads and registers on any cloud.
      const registered = await tools.registerWithKamaki.executeWithOptions({ summary: 'upload and register' }, [
        { path: prepared.path, event, options, metadata: prepared.metadata, format: raw.format ?? 'raw' },
      ]);

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
    },
    () => quick.cleanupWorkspace.executeWithOptions({ summary: 'remove the work folder' }, [{ workflowId }]),
  );
}
