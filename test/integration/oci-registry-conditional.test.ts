import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parseConfig } from '../../core/config.js';
import type { AcceptedList, SubscriptionSpec } from '../../core/workflow-contract.js';
import { readRegistryProject, type ReadRegistryProject } from '../../oci/source.js';
import { configuredSubscriptions } from '../../subscriptions/sources.js';
import { seedRegisteredImages } from '../support/big-list.js';
import { fakeCloud, FAKE_KAMAKI } from '../support/fake-cloud.js';
import { quietLogger } from '../support/pipeline-fixtures.js';
import { uniqueTaskQueue } from '../support/service-process.js';
import { startSyncWorker, type SyncWorker } from '../support/sync-worker.js';
import {
  egiAnnotations,
  pushProject,
  registryFront,
  startRegistry,
  type PushedArtifact,
  type RegistryFront,
  type TestRegistry,
} from '../support/registry.js';

/**
 * A registry project read again with nothing changed costs one conditional request per selected
 * tag's manifest (`If-None-Match` with the digest read last, answered 304 by the real
 * docker-registry), never the manifest again; a tag that moved is read whole. Every request is
 * counted by a proxy in front of the registry, and the read's own counts must agree with it. A
 * read given only what a large project's copy carries (its bounded memory and the project's
 * validator, not the images) says "not modified" at the same cost, and otherwise makes the same
 * images as a read given them.
 */

const PROJECT = 'egi_vm_images';
const READER = { user: 'reader', password: randomBytes(9).toString('hex') };
const REPOSITORIES = ['almalinux', 'debian', 'ubuntu'];
/** Five tags per repository, as EGI publishes: two short ones (selected by the default pattern) and three dated ones. */
const tagsOf = (version: string) => [
  version,
  'latest',
  `${version}-20250101-a1`,
  `${version}-20250201-b2`,
  `${version}-20250301-c3`,
];

interface Seen {
  method: string;
  path: string;
  ifNoneMatch?: string;
  status: number;
}

describe('a registry project read again: conditional requests', () => {
  let registry: TestRegistry;
  let front: RegistryFront;
  const seen: Seen[] = [];
  let strip = false;
  const pushed: Record<string, PushedArtifact> = {};
  const config = parseConfig({ security: { credentials: { reader: `${READER.user}:${READER.password}` } } }, 'test');

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'htpasswd', users: { [READER.user]: READER.password } });
    for (const name of REPOSITORIES)
      pushed[name] = await registry.push(`${PROJECT}/${name}`, {
        tags: tagsOf('1'),
        disk: randomBytes(4096),
        annotations: egiAnnotations(name, '1'),
      });
    front = await registryFront(registry.url, {
      answer: (req: http.IncomingMessage) => {
        // A registry that ignores If-None-Match, when the test says so.
        if (strip) delete req.headers['if-none-match'];
        return false;
      },
      rewrite: (req, answer) => {
        const header = req.headers['if-none-match'];
        seen.push({
          method: req.method ?? 'GET',
          path: new URL(req.url ?? '/', 'http://front').pathname,
          ifNoneMatch: Array.isArray(header) ? header[0] : header,
          status: answer.status,
        });
        return answer;
      },
    });
  });
  afterAll(async () => {
    await front?.close();
    await registry?.close();
  });

  const source = (vo?: string) => ({
    registry: front.url,
    project: PROJECT,
    credential: 'reader',
    vo,
    plainHttpOnLoopback: true,
  });
  const read = async (previous?: ReadRegistryProject, vo?: string) => {
    seen.length = 0;
    const result = await readRegistryProject({
      source: source(vo),
      config,
      logger: quietLogger,
      previous: previous?.images,
      manifests: previous?.manifests,
    });
    return { result, requests: [...seen], manifests: seen.filter((s) => s.path.includes('/manifests/')) };
  };
  /** A read given what a copy without the images carries: the bounded memory and (unless told) the project's validator. */
  const readRemembering = async (previous: ReadRegistryProject, withValidator = true) => {
    seen.length = 0;
    const result = await readRegistryProject({
      source: source(),
      config,
      logger: quietLogger,
      memory: previous.memory,
      validator: withValidator ? previous.validator : undefined,
    });
    return { result, requests: [...seen], manifests: seen.filter((s) => s.path.includes('/manifests/')) };
  };
  const digests = (result: ReadRegistryProject) =>
    Object.fromEntries(
      result.images.map((i) => [i.event.imageId, i.event.properties?.['org.opencontainers.image.ref.digest']]),
    );

  let first: ReadRegistryProject;

  it('the first read reads every selected manifest whole, and remembers a digest per selected tag', async () => {
    const { result, requests, manifests } = await read();
    first = result;
    expect(result.invalid).toEqual([]);
    expect(digests(result)).toEqual(Object.fromEntries(REPOSITORIES.map((r) => [r, pushed[r].manifestDigest])));
    // The short tags only (the default pattern): '1' and 'latest' of each repository, none conditional.
    expect(manifests.map((m) => `${m.path} ${m.status}`).sort()).toEqual(
      REPOSITORIES.flatMap((r) => [
        `/v2/${PROJECT}/${r}/manifests/1 200`,
        `/v2/${PROJECT}/${r}/manifests/latest 200`,
      ]).sort(),
    );
    expect(manifests.every((m) => m.ifNoneMatch === undefined)).toBe(true);
    expect(result.manifests).toEqual(
      Object.fromEntries(
        REPOSITORIES.map((r) => [r, { '1': pushed[r].manifestDigest, latest: pushed[r].manifestDigest }]),
      ),
    );
    expect(result.requests).toEqual({ total: requests.length, conditional: 0, notModified: 0, tokens: 0 });
  });

  it('a second read with nothing changed makes only conditional manifest requests, all answered 304, and gives the same images', async () => {
    const { result, requests, manifests } = await read(first);
    expect(result.images).toEqual(first.images);
    expect(result.invalid).toEqual([]);
    expect(result.unread).toEqual([]);
    expect(manifests).toHaveLength(REPOSITORIES.length * 2);
    for (const m of manifests) {
      expect(m.ifNoneMatch).toMatch(/^"sha256:[0-9a-f]{64}"$/);
      expect(m.status).toBe(304);
    }
    expect(result.manifests).toEqual(first.manifests);
    // The read's own counts are what reached the registry: the catalog, a tag list per repository, the 304s.
    expect(result.requests).toEqual({
      total: requests.length,
      conditional: manifests.length,
      notModified: manifests.length,
      tokens: 0,
    });
    // Besides: the probe for Harbor, the catalog (asked once without the login, answered 401), and the tag lists.
    expect(
      requests
        .filter((r) => !r.path.includes('/manifests/'))
        .map((r) => `${r.path} ${r.status}`)
        .sort(),
    ).toEqual(
      [
        '/api/v2.0/systeminfo 404',
        '/v2/_catalog 401',
        '/v2/_catalog 200',
        ...REPOSITORIES.map((r) => `/v2/${PROJECT}/${r}/tags/list 200`),
      ].sort(),
    );
  });

  it('a tag that moved is read whole; the unchanged ones still cost a 304 each', async () => {
    const moved = await registry.push(`${PROJECT}/debian`, {
      tags: ['1', 'latest'],
      disk: randomBytes(4096),
      annotations: egiAnnotations('debian', '1'),
    });
    const { result, manifests } = await read(first);
    expect(digests(result)).toEqual({ ...digests(first), debian: moved.manifestDigest });
    const debian = result.images.find((i) => i.event.imageId === 'debian')!.event;
    expect(debian.checksumSha256).toBe(moved.layerDigest.slice('sha256:'.length));
    expect(
      manifests
        .filter((m) => m.status === 200)
        .map((m) => m.path)
        .sort(),
    ).toEqual([`/v2/${PROJECT}/debian/manifests/1`, `/v2/${PROJECT}/debian/manifests/latest`]);
    expect(manifests.filter((m) => m.status === 304)).toHaveLength((REPOSITORIES.length - 1) * 2);
    expect(result.manifests?.debian).toEqual({ '1': moved.manifestDigest, latest: moved.manifestDigest });
    expect(result.requests).toMatchObject({
      conditional: REPOSITORIES.length * 2,
      notModified: (REPOSITORIES.length - 1) * 2,
    });
    first = result;
  });

  it('an image accepted for another VO is not taken from a 304: its manifest is read whole again', async () => {
    const { result, manifests } = await read(first, 'other.vo');
    expect(result.images.map((i) => i.event.vo)).toEqual(REPOSITORIES.map(() => 'other.vo'));
    expect(digests(result)).toEqual(digests(first));
    // Each repository: two 304s, then the newest tag read whole to make the event anew.
    expect(manifests.filter((m) => m.status === 304)).toHaveLength(REPOSITORIES.length * 2);
    expect(manifests.filter((m) => m.status === 200)).toHaveLength(REPOSITORIES.length);
  });

  it('a copy without the images, nothing changed: one conditional request per selected manifest, all 304, and the read says not modified without making an image', async () => {
    expect(first.validator).toMatch(/^registry-manifests:[0-9a-f]{64}$/);
    const { result, requests, manifests } = await readRemembering(first);
    expect(result.notModified).toBe(true);
    expect(result.images).toEqual([]);
    expect(result.validator).toBe(first.validator);
    expect(manifests).toHaveLength(REPOSITORIES.length * 2);
    for (const m of manifests) {
      expect(m.ifNoneMatch).toMatch(/^"sha256:[0-9a-f]{64}"$/);
      expect(m.status).toBe(304);
    }
    expect(result.requests).toEqual({
      total: requests.length,
      conditional: manifests.length,
      notModified: manifests.length,
      tokens: 0,
    });
  });

  it('a copy without the images, read again without the validator (the cloud was not what it wants): the same images, each made again from its newest manifest read whole', async () => {
    const { result, manifests } = await readRemembering(first, false);
    expect(result.notModified).toBeUndefined();
    expect(result.images).toEqual(first.images);
    expect(result.validator).toBe(first.validator);
    // Each repository: two 304s, then its newest tag read whole, as no event was carried to take from a 304.
    expect(manifests.filter((m) => m.status === 304)).toHaveLength(REPOSITORIES.length * 2);
    expect(manifests.filter((m) => m.status === 200)).toHaveLength(REPOSITORIES.length);
  });

  it('a copy without the images, a tag moved: not modified no more, and the images are those a copy with them gives', async () => {
    const moved = await registry.push(`${PROJECT}/almalinux`, {
      tags: ['1', 'latest'],
      disk: randomBytes(4096),
      annotations: egiAnnotations('almalinux', '1'),
    });
    const withImages = await read(first);
    const { result, manifests } = await readRemembering(first);
    expect(result.notModified).toBeUndefined();
    expect(result.images).toEqual(withImages.result.images);
    expect(digests(result)).toEqual({ ...digests(first), almalinux: moved.manifestDigest });
    expect(result.validator).not.toBe(first.validator);
    // The moved tags answered whole; each other repository's two 304s and its newest tag read whole.
    expect(manifests.filter((m) => m.status === 304)).toHaveLength((REPOSITORIES.length - 1) * 2);
    expect(manifests.filter((m) => m.status === 200)).toHaveLength(2 + (REPOSITORIES.length - 1));
    first = result;
  });

  it('a registry that ignores If-None-Match answers whole manifests, and the read is the same', async () => {
    strip = true;
    try {
      const { result, manifests } = await read(first);
      expect(result.images).toEqual(first.images);
      expect(manifests.every((m) => m.status === 200)).toBe(true);
      expect(result.requests).toMatchObject({ conditional: REPOSITORIES.length * 2, notModified: 0 });
      // Read whole, the manifests are still those the validator was made of: not modified.
      const remembering = await readRemembering(first);
      expect(remembering.result.notModified).toBe(true);
      expect(remembering.manifests.every((m) => m.status === 200)).toBe(true);
    } finally {
      strip = false;
    }
  });
});

/**
 * A registry subscription of 300 repositories × 5 tags (every tag selected: 1,500 manifests)
 * synced by the real workflow and sync step (test/support/sync-worker.ts), every image registered
 * already in the (fake) cloud: no payload of any run's history exceeds 256 KiB — the copy a run
 * carries to the next holds each tag's digest and, of each image, its digests and what
 * oci/remembered.ts keeps, never the images (about 1 KB each) — and the runs decide what a copy
 * with the images decided: nothing to do, then not modified at one conditional request per
 * manifest, then exactly the moved image updated.
 */
describe('a registry subscription of 300 repositories × 5 tags, synced by the real workflow', () => {
  const SCALE = { repositories: 300, tags: 5 };
  const IMAGES = SCALE.repositories;
  const MANIFESTS = SCALE.repositories * SCALE.tags;
  const MAX_PAYLOAD = 256 * 1024;
  let registry: TestRegistry;
  let dir: string;
  let sync: SyncWorker;
  let spec: SubscriptionSpec;
  const oversized = async () => (await sync.payloads()).filter((p) => p.bytes > MAX_PAYLOAD);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-registry-scale-'));
    registry = await startRegistry({ auth: 'none' });
    await pushProject(registry, PROJECT, SCALE);
    const cloud = await fakeCloud(dir);
    Object.assign(process.env, cloud.env);
    const config = parseConfig(
      {
        temporal: { taskQueue: uniqueTaskQueue('deliveries') },
        worker: { workingFolder: path.join(dir, 'work') },
        synnefo: { kamaki: FAKE_KAMAKI, sudo: [], prepare: false, public: true, cloud: cloud.cloud },
        subscriptions: [
          {
            registry: registry.url,
            project: PROJECT,
            tags: '.*',
            api: 'distribution',
            every: '8760h',
            cloud: cloud.cloud,
            plainHttpOnLoopback: true,
          },
        ],
      },
      'test',
    );
    spec = configuredSubscriptions(config, 'config')[0]!.spec;
    // Every image of the project is ours in the cloud already, as its registration leaves it.
    const project = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, tags: '.*', api: 'distribution', plainHttpOnLoopback: true },
      config,
      logger: quietLogger,
    });
    expect(project.images).toHaveLength(IMAGES);
    await seedRegisteredImages(
      cloud.env.FAKE_SYNNEFO_STATE,
      await cloud.account(),
      project.images.map((i) => i.event),
    );
    sync = await startSyncWorker(config);
  }, 300_000);

  afterAll(async () => {
    await sync?.stop();
    await registry?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let carried: AcceptedList;
  let listing: number;

  it('all registered: the first run reads every manifest whole, delivers nothing, and carries digests, not images; no history payload over 256 KiB', async () => {
    const { result } = await sync.syncNow(spec);
    expect(result.summary).toMatchObject({ fetched: 'changed', registered: [], expired: [], unchanged: IMAGES });
    expect(result.summary.requests).toMatchObject({ conditional: 0, notModified: 0 });
    // Besides one GET per manifest: the catalog's pages and a tag list per repository.
    listing = result.summary.requests!.total - MANIFESTS;
    carried = result.accepted!;
    expect(carried.images).toEqual([]);
    expect(carried.imageCount).toBe(IMAGES);
    expect(carried.registry).toBeDefined();
    expect(carried.etag).toMatch(/^registry-manifests:/);
    expect(await oversized()).toEqual([]);
  });

  it('nothing changed: one conditional request per manifest, all answered 304, the run is not modified and delivers nothing; it carries the same copy on', async () => {
    const { result } = await sync.syncNow(spec);
    expect(result.summary).toMatchObject({ fetched: 'not-modified', registered: [], expired: [], unchanged: IMAGES });
    expect(result.summary.requests).toMatchObject({ conditional: MANIFESTS, notModified: MANIFESTS });
    expect(result.accepted).toEqual(carried);
    expect(await oversized()).toEqual([]);
  });

  it('one repository moved to a new image: exactly that image updated (its old revision stays until the new one is registered), the other 299 unchanged', async () => {
    const tags = ['1', ...[1, 2, 3, 4].map((d) => `1-2025010${d}-image-123`)];
    await registry.push(`${PROJECT}/image-123`, {
      tags,
      disk: randomBytes(1024),
      annotations: egiAnnotations('image-123', '1'),
    });
    const { result } = await sync.syncNow(spec);
    const { summary } = result;
    expect(summary.fetched).toBe('changed');
    expect(summary.registered.map((r) => [r.imageId, r.reason])).toEqual([['image-123', 'updated']]);
    expect(summary.expired).toEqual([]);
    expect(summary.unchanged).toBe(IMAGES - 1);
    // Its 5 tags answered whole; every other image made again from its newest manifest read whole.
    expect(summary.requests).toMatchObject({
      total: listing + MANIFESTS + (IMAGES - 1),
      conditional: MANIFESTS,
      notModified: MANIFESTS - tags.length,
    });
    expect(result.accepted!.etag).not.toBe(carried.etag);
    expect(await oversized()).toEqual([]);
  });
});
