/**
 * The steps of a subscription's sync run (workflows/sync-image-list.ts): read the subscription
 * through its source (subscriptions/sources.ts), see what the cloud holds for it, and deliver the
 * events the plan decided to the image revisions' workflows, exactly as the bridge does.
 */
import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import type { Client } from '@temporalio/client';
import { registrationSite, type CloudTargets } from '../clouds/index.js';
import type { CloudInventory, InventoryRequest } from '../clouds/target.js';
import type { ImageEvent } from '../core/event.js';
import type { SourceReadContext } from '../core/subscription-source.js';
import { cloudsOf, startWorkflowForEvent } from '../core/starter.js';
import {
  SA_IMAGE_LIST_ID,
  SYNC_PROGRESS_SIGNAL,
  SYNC_WORKFLOW,
  type SyncProgress,
  type RegistrationOptions,
  type SubscriptionRead,
  type SubscriptionReadInput,
  type SubscriptionSpec,
  type SyncSummary,
} from '../core/workflow-contract.js';
import type { ReadSubscribedListInput } from '../image-lists/list-read.js';
import { listReader } from '../image-lists/subscription-source.js';
import type { ProjectReadInput } from '../oci/project-read.js';
import { readSubscribedProject } from '../oci/subscription-source.js';
import { activityContext, cancellationSignal } from '../runtime/context.js';
import type { ActivityDeps } from '../runtime/deps.js';
import { keepHeartbeating, type StepProgress } from '../runtime/heartbeats.js';
import { runSync, type SyncRunInput, type SyncRunResult } from '../subscriptions/sync-run.js';
import { syncWorkflowIdPrefix } from '../subscriptions/schedules.js';
import { sourceOf } from '../subscriptions/sources.js';

interface SubscriptionDeps extends ActivityDeps {
  /** The worker's Temporal client, connected on first use. */
  temporal: () => Promise<Client>;
  clouds: CloudTargets;
}

/** The requests of several reads, added up. */
function totalRequests(all: Array<NonNullable<SyncSummary['requests']>>): NonNullable<SyncSummary['requests']> {
  const total = { total: 0, conditional: 0, notModified: 0, tokens: 0 };
  for (const r of all) for (const key of Object.keys(total) as Array<keyof typeof total>) total[key] += r[key];
  return total;
}

/** A literal for a Temporal visibility query. */
function queryLiteral(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * What a source's read runs with: the configuration, the cancellation, and the other subscriptions'
 * runs (a list id belongs to one subscription). The sync's step, and `subscriptions missing`.
 */
export function subscriptionReadContext(
  config: Config,
  log: Logger,
  temporal: () => Promise<Client>,
  signal?: AbortSignal,
): SourceReadContext {
  return {
    config,
    logger: log,
    signal,
    async syncedElsewhere(subscription: SubscriptionSpec, listId: string) {
      const client = await temporal();
      const ours = syncWorkflowIdPrefix(subscription);
      const query = [
        `WorkflowType = ${queryLiteral(SYNC_WORKFLOW)}`,
        `${SA_IMAGE_LIST_ID.name} = ${queryLiteral(listId)}`,
        `ExecutionStatus = 'Completed'`,
        `TaskQueue = ${queryLiteral(config.temporal.taskQueue)}`,
      ].join(' AND ');
      for await (const run of client.workflow.list({ query })) {
        if (run.workflowId.startsWith(`${ours}-`) || run.workflowId === ours) continue;
        return run.workflowId;
      }
      return undefined;
    },
  };
}

export function createSubscriptionActivities({ config, logger, temporal, clouds }: SubscriptionDeps) {
  const log = logger.child({ component: 'subscriptions' });
  /** What a source's read runs with: the worker's configuration, the activity's cancellation, the other subscriptions' runs. */
  const readContext = (): SourceReadContext => subscriptionReadContext(config, log, temporal, cancellationSignal());

  /**
   * Delivers the events `worker.subscriptionDeliveries` at a time, in any order; each one's
   * workflow id in the events' order. `delivered` is told each time one more is delivered.
   */
  const deliverAll = async (
    events: ImageEvent[],
    options: RegistrationOptions,
    delivered: (done: number) => void,
  ): Promise<string[]> => {
    const client = await temporal();
    const site = registrationSite(config);
    const ids: string[] = new Array<string>(events.length).fill('');
    let next = 0;
    let done = 0;
    let failed = false;
    const lane = async () => {
      while (!failed && next < events.length) {
        const i = next++;
        try {
          ids[i] = (await startWorkflowForEvent(client, config, events[i]!, options, site)).childWorkflowId ?? '';
        } catch (err) {
          failed = true;
          throw err;
        }
        delivered(++done);
      }
    };
    const lanes = Math.min(config.worker.subscriptionDeliveries, events.length);
    await Promise.all(Array.from({ length: lanes }, lane));
    return ids;
  };

  return {
    /**
     * A whole sync run (subscriptions/sync-run.ts): read, the cloud's inventory, the plan, the
     * mass-expiry guard and the deliveries, here on the worker, so that nothing the size of the
     * list enters the run's history. Its heartbeat says the step, and while delivering `done` of
     * `total`; the run is told the same by signal (at most every 2 s), for its current details.
     * Repeating it after a crash is safe: a read is repeatable and a delivery joins the running
     * workflow of its image revision.
     */
    async syncSubscription(input: SyncRunInput): Promise<SyncRunResult> {
      const source = sourceOf(input.subscription);
      const progress: StepProgress = { step: `read ${input.subscription.url}` };
      const stop = keepHeartbeating(() => progress);
      const run = activityContext()?.info.workflowExecution;
      const requests: Array<NonNullable<SyncSummary['requests']>> = [];
      let told = 0;
      const tell = async (state: SyncProgress) => {
        if (!run) return;
        told = Date.now();
        const client = await temporal();
        await client.workflow
          .getHandle(run.workflowId, run.runId)
          .signal(SYNC_PROGRESS_SIGNAL, state)
          .catch((err: unknown) => log.debug({ err }, 'could not tell the run its progress'));
      };
      try {
        const result = await runSync(
          {
            read: async (i) => {
              const read = await source.read(readContext(), i);
              if (read.requests) requests.push(read.requests);
              return read;
            },
            inventory: (req) => {
              progress.step = `list the images of ${req.listId} on ${req.options.cloud ?? 'the cloud'}`;
              return clouds.of(req.options).inventory(req);
            },
            clouds: (options, vo) => {
              const site = registrationSite(config);
              return cloudsOf({ vo }, options, site, input.subscription.clouds).map((each) =>
                site.clouds ? { name: each.cloud, options: each } : { options: each },
              );
            },
            deliver: async (events, options) => {
              Object.assign(progress, { step: 'delivering image events', done: 0, total: events.length });
              await tell({ done: 0, total: events.length });
              return deliverAll(events, options, (done) => {
                progress.done = done;
                if (done < events.length && Date.now() - told >= 2000) void tell({ done, total: events.length });
              });
            },
            readsPreviousImages: source.readsPreviousImages,
            warn: (message, details) => log.warn({ url: input.subscription.url, ...details }, message),
          },
          input,
        );
        // What every read of the run asked of its server: a registry project found not modified
        // too, and the read again when the cloud was not what the copy wants.
        if (requests.length > 0) result.summary.requests = totalRequests(requests);
        return result;
      } finally {
        stop();
      }
    },

    /** Reads the subscription through its source, against the copy accepted last (core/subscription-source.ts). */
    readSubscription: (input: SubscriptionReadInput): Promise<SubscriptionRead> =>
      sourceOf(input.subscription).read(readContext(), input),

    /** An image list's read as runs begun before readSubscription record it (image-lists/subscription-source.ts). */
    readSubscribedList: (input: ReadSubscribedListInput) => listReader(readContext())(input),

    /** A registry project's read as runs begun before readSubscription record it (oci/subscription-source.ts). */
    readSubscribedRegistry: (input: ProjectReadInput) => readSubscribedProject(readContext(), input),

    /** The images of this list that our account holds in the cloud (never another tenant's). */
    cloudInventory: (req: InventoryRequest): Promise<CloudInventory> => clouds.of(req.options).inventory(req),

    /**
     * Delivers each event to its image revision's workflow (signal-with-start, the bridge's own
     * path), so the hook path and the subscription never register an image twice. Delivering
     * again after a crash is harmless: the running workflow takes the same event once more.
     */
    async deliverImageEvents({
      events,
      options,
    }: {
      events: ImageEvent[];
      options: RegistrationOptions;
    }): Promise<string[]> {
      const client = await temporal();
      const site = registrationSite(config);
      let done = 0;
      const stop = keepHeartbeating(() => ({ step: 'delivering image events', done, total: events.length }));
      try {
        const ids: string[] = [];
        for (const event of events) {
          const started = await startWorkflowForEvent(client, config, event, options, site);
          ids.push(started.childWorkflowId ?? '');
          done++;
        }
        return ids;
      } finally {
        stop();
      }
    },
  };
}

export type SubscriptionActivities = ReturnType<typeof createSubscriptionActivities>;
