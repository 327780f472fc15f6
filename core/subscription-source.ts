/**
 * A source of subscriptions: where a sync run reads the images it then registers and expires (an
 * image list, a registry project). Each source is a folder implementing this (image-lists/,
 * oci/); subscriptions/sources.ts lists them, the one place that chooses among them. The schedule,
 * the sync plan and the delivery (subscriptions/, workflows/sync-image-list.ts) are the same for all.
 */
import type { Config } from './config.js';
import type { CheckResult, HealthContext } from './health.js';
import type { Logger } from './logging.js';
import type { SubscriptionRead, SubscriptionReadInput, SubscriptionSpec } from './workflow-contract.js';

/** How a source's subscription is shown: in its schedule (the Web UI) and by the `subscriptions` command. */
interface SourceDescription {
  /** The schedule's summary, e.g. `Sync of the image list <url>`. */
  summary: string;
  /** What a run does, the first line of the schedule's details. */
  reads: string;
  /** A word after the origin in `subscriptions` (`[config, registry]`); none for an image list. */
  label?: string;
  /** Whether the subscription pins the list id it accepted first (`subscriptions` shows it). */
  pinsListId: boolean;
}

/** What a source's read runs with, on the worker. */
export interface SourceReadContext {
  config: Config;
  logger: Logger;
  signal?: AbortSignal;
  /**
   * The workflow id of a finished sync of another subscription that took `listId`, if any: a list
   * id belongs to one subscription.
   */
  syncedElsewhere(subscription: SubscriptionSpec, listId: string): Promise<string | undefined>;
}

export interface SubscriptionSource<Entry extends { paused?: boolean } = { paused?: boolean }> {
  /** The spec's `source`: undefined for image lists, whose schedules carried none before there were other sources. */
  readonly name: string | undefined;
  /** Its entries of the configuration's `subscriptions` (core/config.ts parses them). */
  entries(config: Config): readonly Entry[];
  /** What its schedule carries, and every run of it: names only, never a secret. */
  spec(entry: Entry, origin: SubscriptionSpec['origin']): SubscriptionSpec;
  describe(spec: SubscriptionSpec): SourceDescription;
  /**
   * What the subscription offers now, checked against the copy accepted last (`previous`). A
   * subscription the site must not trust fails with a non-retryable ImageListRejected.
   */
  read(ctx: SourceReadContext, input: SubscriptionReadInput): Promise<SubscriptionRead>;
  /** `doctor`: the subscription answers with its credential (nothing is synced). Catches its own failures. */
  check(ctx: HealthContext, entry: Entry): Promise<CheckResult>;
  /**
   * Whether `read` needs the images it accepted last themselves: they travel to the next run
   * whatever their number. Otherwise a large copy's images travel as digests
   * (subscriptions/carried-copy.ts), and the read makes do with what the copy carries besides (a
   * list: its metadata; a registry project: oci/remembered.ts). No source needs them today.
   */
  readonly readsPreviousImages: boolean;
}
