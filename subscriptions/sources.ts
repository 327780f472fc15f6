/**
 * The sources of subscriptions, and the one place that chooses among them. A new source is a folder
 * implementing SubscriptionSource (core/subscription-source.ts), listed here.
 */
import type { Config } from '../core/config.js';
import { InvalidInputError } from '../core/errors.js';
import type { CheckResult, HealthContext } from '../core/health.js';
import type { SubscriptionSource } from '../core/subscription-source.js';
import type { SubscriptionSpec } from '../core/workflow-contract.js';
import { imageListSource } from '../image-lists/subscription-source.js';
import { registrySource } from '../oci/subscription-source.js';

const SOURCES: readonly SubscriptionSource[] = [imageListSource, registrySource];

/** The source a spec is of (its `source`: none for an image list). */
export function sourceOf(spec: Pick<SubscriptionSpec, 'source' | 'url'>): SubscriptionSource {
  const source = SOURCES.find((s) => s.name === spec.source);
  if (!source)
    throw new InvalidInputError(`subscription ${spec.url} names a source this worker does not know: ${spec.source}`);
  return source;
}

/** Every subscription application.conf declares, of every source: its spec and whether it is paused. */
export function configuredSubscriptions(
  config: Config,
  origin: SubscriptionSpec['origin'],
): Array<{ spec: SubscriptionSpec; paused: boolean }> {
  return SOURCES.flatMap((source) =>
    source.entries(config).map((entry) => ({ spec: source.spec(entry, origin), paused: entry.paused ?? false })),
  );
}

/** `doctor`: every configured subscription, source by source; none when there are none. */
export async function subscriptionChecks(ctx: HealthContext): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const source of SOURCES)
    for (const entry of source.entries(ctx.config)) results.push(await source.check(ctx, entry));
  return results;
}
