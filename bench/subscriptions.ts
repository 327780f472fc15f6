/**
 * `npm run bench -- subscriptions`: what a subscription's sync costs at scale, in two parts run
 * one after the other — a registry project's read (registry-sync.ts: 300 repositories × 5 tags)
 * and an image list's whole sync run (list-sync.ts: 5,000 images, all registered).
 */
import { benchListSync } from './list-sync.js';
import { benchRegistrySync } from './registry-sync.js';
import type { BenchResult } from './lib.js';

export async function benchSubscriptions(): Promise<BenchResult> {
  const registry = await benchRegistrySync();
  const list = await benchListSync();
  return {
    name: 'subscriptions',
    title: 'Subscriptions at scale: a registry project of 300 repositories × 5 tags, an image list of 5,000 images',
    method: 'Two parts, one after the other on the same machine: each has its table below.',
    rows: [],
    targets: [...registry.targets, ...list.targets],
    sections: [registry, list].map(({ title, method, rows, notes }) => ({ title, method, rows, notes })),
    raw: { registry: registry.raw, list: list.raw },
  };
}
