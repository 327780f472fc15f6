import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parseConfig } from '../../core/config.js';
import { readRegistryProject, type ReadRegistryProject } from '../../oci/source.js';
import { quietLogger } from '../support/pipeline-fixtures.js';
import {
  egiAnnotations,
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
 * counted by a proxy in front of the registry, and the read's own counts must agree with it.
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

  const read = async (previous?: ReadRegistryProject, vo?: string) => {
    seen.length = 0;
    const result = await readRegistryProject({
      source: { registry: front.url, project: PROJECT, credential: 'reader', vo, plainHttpOnLoopback: true },
      config,
      logger: quietLogger,
      previous: previous?.images,
      manifests: previous?.manifests,
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

  it('a registry that ignores If-None-Match answers whole manifests, and the read is the same', async () => {
    strip = true;
    try {
      const { result, manifests } = await read(first);
      expect(result.images).toEqual(first.images);
      expect(manifests.every((m) => m.status === 200)).toBe(true);
      expect(result.requests).toMatchObject({ conditional: REPOSITORIES.length * 2, notModified: 0 });
    } finally {
      strip = false;
    }
  });
});
