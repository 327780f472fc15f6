import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The worker's product metrics: what happened to images and subscriptions, beside the Temporal
 * SDK's own metrics (worker.metricsPort). They are served by prom-client on their own port
 * (worker.productMetricsPort) rather than through the SDK's exporter, because several of them
 * are computed when Prometheus scrapes (the host's slots, the subscriptions' last successful
 * sync read from Temporal), which the SDK's push-style meter cannot do, and because their names,
 * labels and buckets stay ours (docs/operations.md "Metrics and alerts").
 *
 * Each worker gets its own registry, so a process that runs worker and bridge together (or a
 * test that starts several workers) never mixes them.
 */
export interface WorkerMetrics {
  registry: Registry;
  registered: Counter<'cloud'>;
  expired: Counter<'cloud'>;
  failed: Counter<'cloud' | 'action' | 'kind'>;
  downloadedBytes: Counter;
  stepDuration: Histogram<'step' | 'outcome'>;
  syncs: Counter<'subscription' | 'outcome'>;
}

/** What the scrape-time gauges read: the host's slots and disk waits, and the subscriptions' state in Temporal. */
export interface WorkerMetricSources {
  slots(): { capacity: number; held: number; waiting: number };
  waitingForDisk(): number;
  /** Every subscription with its interval, its schedule's creation and last successful sync (undefined: never, as far as Temporal keeps). */
  subscriptions(): Promise<
    Array<{ subscription: string; intervalSeconds: number; createdAt: Date; lastSuccess?: Date }>
  >;
}

const WORKER_PREFIX = 'snf_vmcatcher_';

/** Step durations range from a second (inspect) to hours (a 20 GB download, sysprep). */
const STEP_BUCKETS = [0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];

export function createWorkerMetrics(sources: WorkerMetricSources): WorkerMetrics {
  const registry = new Registry();
  const registers = [registry];
  const name = (n: string) => `${WORKER_PREFIX}${n}`;
  const gauge = (n: string, help: string, read: () => number) =>
    new Gauge({
      name: name(n),
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge('host_slots', "This host's image slots (worker.maxConcurrentFileSteps)", () => sources.slots().capacity);
  gauge('host_slots_held', "Images holding one of this host's slots", () => sources.slots().held);
  gauge('images_waiting_for_slot', 'Images waiting for a slot on this host', () => sources.slots().waiting);
  gauge(
    'images_waiting_for_disk',
    'Images on this host waiting for free disk space (stage waiting-for-disk)',
    sources.waitingForDisk,
  );
  const interval = new Gauge<'subscription'>({
    name: name('subscription_interval_seconds'),
    help: "A subscription's sync interval",
    labelNames: ['subscription'],
    registers,
  });
  const created = new Gauge<'subscription'>({
    name: name('subscription_created_timestamp_seconds'),
    help: "When a subscription's schedule was created (the alert's start for a subscription never synced)",
    labelNames: ['subscription'],
    registers,
  });
  new Gauge<'subscription'>({
    name: name('subscription_last_success_timestamp_seconds'),
    help: "When a subscription's last successful sync ended (absent: none in Temporal's retention)",
    labelNames: ['subscription'],
    registers,
    async collect() {
      const subscriptions = await sources.subscriptions();
      // Both gauges are rebuilt from Temporal's state, so a removed subscription leaves no stale series.
      this.reset();
      interval.reset();
      created.reset();
      for (const s of subscriptions) {
        interval.set({ subscription: s.subscription }, s.intervalSeconds);
        created.set({ subscription: s.subscription }, s.createdAt.getTime() / 1000);
        if (s.lastSuccess) this.set({ subscription: s.subscription }, s.lastSuccess.getTime() / 1000);
      }
    },
  });
  return {
    registry,
    registered: new Counter({
      name: name('images_registered_total'),
      help: 'Images registered (a registration that uploaded and registered the image), by cloud',
      labelNames: ['cloud'],
      registers,
    }),
    expired: new Counter({
      name: name('images_expired_total'),
      help: 'Image expiries done (made private or unregistered), by cloud',
      labelNames: ['cloud'],
      registers,
    }),
    failed: new Counter({
      name: name('images_failed_total'),
      help: 'Registrations and expiries that failed for good, by cloud, action (register, expire) and failure kind',
      labelNames: ['cloud', 'action', 'kind'],
      registers,
    }),
    downloadedBytes: new Counter({
      name: name('downloaded_bytes_total'),
      help: 'Bytes of the images this host downloaded (completed downloads; copies from the vmcatcher cache are not counted)',
      registers,
    }),
    stepDuration: new Histogram({
      name: name('step_duration_seconds'),
      help: 'How long one attempt of a file step took, by step (acquire, inspect, convert, prepare, upload) and outcome',
      labelNames: ['step', 'outcome'],
      buckets: STEP_BUCKETS,
      registers,
    }),
    syncs: new Counter({
      name: name('subscription_syncs_total'),
      help: 'Subscription syncs, by subscription and outcome (changed, not-modified, refused, failed)',
      labelNames: ['subscription', 'outcome'],
      registers,
    }),
  };
}

/** The file steps whose durations are measured, by activity type: the names the dashboard shows. */
export const STEP_OF_ACTIVITY: Readonly<Record<string, string>> = {
  acquireImage: 'acquire',
  inspectImage: 'inspect',
  convertToRaw: 'convert',
  prepareImage: 'prepare',
  registerWithKamaki: 'upload',
};
