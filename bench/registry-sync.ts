/**
 * A registry subscription's read at scale: a project of 300 repositories × 5 tags on the real
 * docker-registry (Debian's, started on 127.0.0.1 as the tests start it, filled through its HTTP
 * API with small artifacts as `oras push` makes them), read as a sync run reads it
 * (readRegistryProject). The first read knows nothing and reads every selected manifest whole;
 * a read with nothing changed gets the digests the first remembered and asks for each manifest
 * with If-None-Match. Requests are counted by the client; durations are medians of REPEATS reads.
 * Two tag selections: EGI's default (the short tag: one manifest per repository) and every tag.
 */
import os from 'node:os';
import { pino } from 'pino';
import { parseConfig } from '../core/config.js';
import { projectRead } from '../oci/project-read.js';
import { readRegistryProject, type ReadRegistryProject } from '../oci/source.js';
import { carriedCopy } from '../subscriptions/carried-copy.js';
import { configuredSubscriptions } from '../subscriptions/sources.js';
import { pushProject, startRegistry } from '../test/support/registry.js';
import { REPEATS, log, median, round, timed, type BenchResult } from './lib.js';

const REPOSITORIES = 300;
const TAGS = 5;
const PROJECT = 'egi_vm_images';
const KiB = 1024;

export async function benchRegistrySync(): Promise<BenchResult> {
  const registry = await startRegistry({ auth: 'none' });
  const rows: BenchResult['rows'] = [];
  const raw: Record<string, unknown> = {};
  const notes: string[] = [
    `Load average when it started: ${os
      .loadavg()
      .map((l) => round(l, 1))
      .join(', ')} (1, 5, 15 min) on ${os.cpus().length} cores.`,
  ];
  try {
    const filled = await timed(() => pushProject(registry, PROJECT, { repositories: REPOSITORIES, tags: TAGS }));
    log(`pushed ${REPOSITORIES} repositories × ${TAGS} tags in ${round(filled.ms / 1000, 1)} s`);
    notes.push(
      `Filling the registry (${REPOSITORIES} repositories × ${TAGS} tags, ${REPOSITORIES * (4 + TAGS)} HTTP requests, 8 at a time) took ${round(filled.ms / 1000, 1)} s.`,
    );
    const config = parseConfig({}, 'bench');
    const logger = pino({ level: 'silent' });
    for (const [selection, tags] of [
      ['short tag (default pattern)', undefined],
      ['every tag', '.*'],
    ] as const) {
      const read = (previous?: ReadRegistryProject) =>
        readRegistryProject({
          source: { registry: registry.url, project: PROJECT, tags, plainHttpOnLoopback: true, api: 'distribution' },
          config,
          logger,
          previous: previous?.images,
          manifests: previous?.manifests,
        });
      const cold: number[] = [];
      const warm: number[] = [];
      let first: ReadRegistryProject | undefined;
      let again: ReadRegistryProject | undefined;
      await read(); // warm-up: module loading, the registry's own caches
      for (let i = 0; i < REPEATS; i++) {
        const c = await timed(() => read());
        cold.push(c.ms);
        first = c.value;
        const w = await timed(() => read(first));
        warm.push(w.ms);
        again = w.value;
      }
      if (first!.images.length !== REPOSITORIES || again!.images.length !== REPOSITORIES)
        throw new Error(`expected ${REPOSITORIES} images, read ${first!.images.length} then ${again!.images.length}`);
      if (JSON.stringify(again!.images) !== JSON.stringify(first!.images))
        throw new Error('the read with nothing changed gave other images than the first');
      const stateBytes = Buffer.byteLength(JSON.stringify(first!.manifests));
      const imagesBytes = Buffer.byteLength(JSON.stringify(first!.images));
      // What a sync run carries to the next of this read (subscriptions/carried-copy.ts), as the run makes it.
      const [{ spec }] = configuredSubscriptions(
        parseConfig(
          { subscriptions: [{ registry: registry.url, project: PROJECT, tags, plainHttpOnLoopback: true }] },
          'bench',
        ),
        'config',
      );
      const accepted = await projectRead(async () => first!, { subscription: spec! });
      if (accepted.notModified) throw new Error('a read knowing nothing said not modified');
      const copyBytes = Buffer.byteLength(
        JSON.stringify(carriedCopy(accepted.accepted, { keep: accepted.keep, keepImages: false })),
      );
      // The catalog pages and the tag lists: what the first read asked besides one GET per selected manifest.
      const selected = REPOSITORIES * (tags ? TAGS : 1);
      const listing = first!.requests!.total - selected;
      for (const [label, result, times] of [
        ['first read (nothing known: every manifest whole)', first!, cold],
        ['nothing changed (digests from the last read)', again!, warm],
      ] as const) {
        const r = result.requests!;
        rows.push({
          selection,
          read: label,
          'median s': round(median(times) / 1000, 3),
          'max s': round(Math.max(...times) / 1000, 3),
          requests: r.total,
          conditional: r.conditional,
          'not modified': r.notModified,
          'manifest bodies': r.total - listing - r.notModified,
        });
      }
      raw[selection] = {
        coldMs: cold,
        warmMs: warm,
        first: first!.requests,
        again: again!.requests,
        stateBytes,
        imagesBytes,
        copyBytes,
      };
      notes.push(
        `${selection}: a sync run carries ${round(copyBytes / KiB, 1)} KiB to the next (each tag's digest, of each image what oci/remembered.ts keeps, and the images' digests); the tags' digests as JSON would be ${round(stateBytes / KiB, 1)} KiB and the accepted images themselves, as runs carried them before, ${round(imagesBytes / KiB, 1)} KiB.`,
      );
    }
  } finally {
    await registry.close();
  }
  const warm = rows.filter((r) => String(r.read).startsWith('nothing changed'));
  return {
    name: 'subscriptions',
    title: `Registry sync read: ${REPOSITORIES} repositories × ${TAGS} tags, nothing changed`,
    method: `readRegistryProject (what a registry subscription's sync run reads) against Debian's docker-registry on 127.0.0.1 (filesystem storage, no auth), ${REPOSITORIES} repositories of ${TAGS} tags each naming one small OCI artifact. Each repeat: a read knowing nothing, then a read with the digests it remembered. 'manifest bodies' counts the manifests answered whole: requests less the 304s and the listing (the catalog's pages and a tag list per repository, as many as the first read made besides one GET per selected manifest). Median and max of ${REPEATS} repeats after a warm-up read.`,
    rows,
    targets: warm.map((r) => ({
      target: `${r.selection}, nothing changed: one conditional request per selected manifest, no manifest read whole`,
      measured: `${r.requests} requests, ${r['not modified']} answered 304, ${r['manifest bodies']} manifests read whole, ${r['median s']} s`,
      met: r['manifest bodies'] === 0 && r.conditional === r['not modified'],
    })),
    notes,
    raw,
  };
}
