import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { buildImageProperties } from '../../clouds/synnefo/image-properties.js';
import { parseConfig } from '../../core/config.js';
import { FetchError } from '../../core/errors.js';
import { imageIdentity, type ListedImage } from '../../core/workflow-contract.js';
import { downloadBlob } from '../../oci/blob.js';
import { RegistryClient, resolveRegistryLogin } from '../../oci/client.js';
import { readRegistryProject, type ReadRegistryProject, type RegistrySource } from '../../oci/source.js';
import { generateSelfSignedCertificate, startTestServer, type TestServer } from '../support/http-server.js';
import { quietLogger, tempDir } from '../support/pipeline-fixtures.js';
import {
  egiAnnotations,
  registryFront,
  type FrontAnswer,
  startRegistry,
  type PushedArtifact,
  type RegistryFront,
  type TestRegistry,
} from '../support/registry.js';

/**
 * The registry's part, shown where the attack enters: a real docker-registry on
 * 127.0.0.1 (test/support/registry.ts), a proxy in front of it that misbehaves as a hostile or
 * broken registry would (registryFront), real HTTP(S) servers for blob storage and for the hosts
 * a hostile answer names. The login goes to the registry only and over TLS (plain http to
 * 127.0.0.1 by the explicit plainHttpOnLoopback only); listings stay on the registry and are
 * bounded; a failed read keeps its images (unread) instead of dropping them; a tag moved back is
 * refused; annotations set descriptive properties only; blob faults are classified right.
 */

const PROJECT = 'egi_vm_images';
const READER = { user: 'reader', password: randomBytes(9).toString('hex') };

function configFor(credentials: Record<string, string> = {}, subscriptions: unknown[] = []) {
  return parseConfig({ security: { credentials }, subscriptions }, 'test');
}
const config = configFor({ reader: `${READER.user}:${READER.password}`, wrong: `${READER.user}:nope` });

async function failure(promise: Promise<unknown>): Promise<FetchError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FetchError);
  return err as FetchError;
}

/** A registry client on `url` with the test registry's opt-in (plain http to 127.0.0.1). */
async function clientOn(url: string, credential = 'reader', extra: { tokenRealms?: string[] } = {}) {
  return new RegistryClient({
    registry: new URL(url),
    login: await resolveRegistryLogin(config, credential),
    security: config.security,
    plainHttpOnLoopback: true,
    ...extra,
  });
}

describe('the registry login goes to the registry only, and only over TLS', () => {
  let registry: TestRegistry;
  let pushed: PushedArtifact;
  let storage: TestServer;
  let third: TestServer;
  let front: RegistryFront;
  let cert: Awaited<ReturnType<typeof generateSelfSignedCertificate>>;
  let storageAnswer: { status: number; headers: Record<string, string> };
  const disk = randomBytes(16 * 1024);

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'htpasswd', users: { [READER.user]: READER.password } });
    pushed = await registry.push(`${PROJECT}/ubuntu`, {
      tags: ['22.04'],
      disk,
      annotations: egiAnnotations('ubuntu', '22.04'),
    });
    cert = await generateSelfSignedCertificate('localhost');
    // The host a hostile challenge names: https, on another port than anything else here.
    third = await startTestServer({
      tls: cert,
      hostname: 'localhost',
      routes: { '/token': { body: '{"token":"t"}' } },
    });
    // Blob storage on another host name than the registry's (localhost, not 127.0.0.1).
    storage = await startTestServer({ hostname: 'localhost' });
    front = await registryFront(registry.url, {
      answer(req, res) {
        const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
        if (!blob || !req.headers.authorization) return false;
        storage.route(`/blobs/${blob[1]}`, { ...storageAnswer, body: 'refused' });
        res.writeHead(307, { location: storage.at(`/blobs/${blob[1]}`) }).end();
        return true;
      },
    });
  });
  afterAll(async () => {
    await front?.close();
    await storage?.close();
    await third?.close();
    await cert?.cleanup();
    await registry?.close();
  });

  it('blob storage answering 401 Bearer realm="https://<third host>/": the third host sees no request; a transient failure naming the storage host, not a credential error', async () => {
    storageAnswer = {
      status: 401,
      headers: { 'www-authenticate': `Bearer realm="${third.at('/token')}",service="storage"` },
    };
    const { dir, cleanup } = await tempDir('oci-trust-');
    const client = await clientOn(front.url);
    try {
      const err = await failure(
        downloadBlob(
          client,
          `${PROJECT}/ubuntu`,
          { digest: pushed.layerDigest, size: pushed.layerSize },
          path.join(dir, 'disk'),
        ),
      );
      expect(err.permanent).toBe(false);
      expect(err.status).toBe(401);
      expect(err.message).toContain(`localhost:${storage.port}, where the registry redirected`);
      expect(err.message).not.toMatch(/refused the credential|check the credential/);
    } finally {
      await client.close();
      await cleanup();
    }
    expect(third.requests).toEqual([]);
    expect(storage.requests.map((r) => r.headers.authorization)).toEqual([undefined]);
    // The registry got the login; the redirect did not carry it.
    expect(front.requests.at(-1)?.authorization).toMatch(/^Basic /);
  });

  it("blob storage answering 403 (a signed URL expired) is transient; the registry's own 401 and 403 are the credential's, permanent", async () => {
    storageAnswer = { status: 403, headers: {} };
    const { dir, cleanup } = await tempDir('oci-trust-');
    const blob = { digest: pushed.layerDigest, size: pushed.layerSize };
    const reader = await clientOn(front.url);
    const wrong = await clientOn(registry.url, 'wrong');
    try {
      const expired = await failure(downloadBlob(reader, `${PROJECT}/ubuntu`, blob, path.join(dir, 'a')));
      expect(expired).toMatchObject({ permanent: false, status: 403 });
      expect(expired.message).toContain(`localhost:${storage.port}`);

      const refused = await failure(downloadBlob(wrong, `${PROJECT}/ubuntu`, blob, path.join(dir, 'b')));
      expect(refused).toMatchObject({ permanent: true, status: 401 });
      expect(refused.message).toMatch(new RegExp(`^registry ${registry.host} refused the credential 'wrong'`));
    } finally {
      await reader.close();
      await wrong.close();
    }
    const forbidding = await registryFront(registry.url, {
      answer(req, res) {
        if (!/\/blobs\//.test(req.url ?? '')) return false;
        res.writeHead(403).end('denied');
        return true;
      },
    });
    const client = await clientOn(forbidding.url);
    try {
      const denied = await failure(downloadBlob(client, `${PROJECT}/ubuntu`, blob, path.join(dir, 'c')));
      expect(denied).toMatchObject({ permanent: true, status: 403 });
      expect(denied.message).toMatch(/does not allow the credential 'reader'/);
    } finally {
      await client.close();
      await forbidding.close();
      await cleanup();
    }
  });

  it('plain http carries no login without the explicit plainHttpOnLoopback: refused before the registry sees it', async () => {
    const recording = await registryFront(registry.url);
    try {
      const err = await failure(
        readRegistryProject({
          source: { registry: recording.url, project: PROJECT, credential: 'reader' },
          config,
          logger: quietLogger,
        }),
      );
      expect(err.permanent).toBe(true);
      expect(err.message).toBe(
        `registry ${new URL(recording.url).host}: ${recording.url}/v2/_catalog is plain http; refusing to send the credential 'reader' in clear (use https)`,
      );
      expect(recording.requests.length).toBeGreaterThan(0);
      expect(recording.requests.every((r) => r.authorization === undefined)).toBe(true);
    } finally {
      await recording.close();
    }
  });
});

describe('the token service is the registry or the configured tokenRealm, over https', () => {
  let registry: TestRegistry;

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'token', users: { [READER.user]: READER.password }, anonymousPull: true });
    await registry.push(`${PROJECT}/ubuntu`, { tags: ['22.04'], disk: randomBytes(1024) });
  });
  afterAll(async () => {
    await registry?.close();
  });

  it('a realm on another origin that the configuration does not name is never contacted, with a login or without', async () => {
    registry.tokenRequests.length = 0;
    for (const credential of ['reader', undefined]) {
      const err = await failure(
        readRegistryProject({
          source: { registry: registry.url, project: PROJECT, credential, plainHttpOnLoopback: true },
          config,
          logger: quietLogger,
        }),
      );
      expect(err.permanent).toBe(true);
      expect(err.message).toBe(
        `registry ${registry.host}: its challenge names the token service ${registry.tokenRealm}, which is neither on the registry nor the subscription's tokenRealm; not contacted`,
      );
    }
    expect(registry.tokenRequests).toEqual([]);
  });

  it('a named realm over plain http is refused without the explicit opt-in; with it (127.0.0.1) the read goes through', async () => {
    registry.tokenRequests.length = 0;
    const err = await failure(
      readRegistryProject({
        source: { registry: registry.url, project: PROJECT, credential: 'reader', tokenRealm: registry.tokenRealm },
        config,
        logger: quietLogger,
      }),
    );
    expect(err.message).toBe(
      `registry ${registry.host}: its token service ${registry.tokenRealm} is plain http; not contacted (use https)`,
    );
    expect(registry.tokenRequests).toEqual([]);
    // The same settings from the site's configuration (the subscription's keys), as the worker reads them.
    const site = configFor({ reader: `${READER.user}:${READER.password}` }, [
      { registry: registry.url, project: PROJECT, credential: 'reader', ...registry.access },
    ]);
    const read = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, credential: 'reader' },
      config: site,
      logger: quietLogger,
    });
    expect(read.images.map((i) => i.event.imageId)).toEqual(['ubuntu']);
    expect(registry.tokenRequests.length).toBeGreaterThan(0);
  });
});

/** A JSON answer with an optional `Link` header. */
function json(body: unknown, link?: string): FrontAnswer {
  return {
    status: 200,
    headers: { 'content-type': 'application/json', ...(link ? { link } : {}) },
    body: Buffer.from(JSON.stringify(body)),
  };
}

function send(res: http.ServerResponse, answer: FrontAnswer): true {
  res.writeHead(answer.status, answer.headers as http.OutgoingHttpHeaders).end(answer.body);
  return true;
}

describe('a registry project read against a misbehaving registry', () => {
  let registry: TestRegistry;
  const pushed: Record<string, PushedArtifact> = {};
  let elsewhere: TestServer;
  const source = (url: string, extra: Partial<RegistrySource> = {}): RegistrySource => ({
    registry: url,
    project: PROJECT,
    credential: 'reader',
    plainHttpOnLoopback: true,
    api: 'distribution',
    ...extra,
  });

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'htpasswd', users: { [READER.user]: READER.password } });
    for (const [name, tag] of [
      ['ubuntu', '22.04'],
      ['almalinux', '9'],
      ['debian', '12'],
    ])
      pushed[name] = await registry.push(`${PROJECT}/${name}`, {
        tags: [tag],
        disk: randomBytes(2048),
        annotations: egiAnnotations(name, tag),
      });
    pushed.other = await registry.push('other_project/debian', { tags: ['12'], disk: randomBytes(1024) });
    elsewhere = await startTestServer({ hostname: 'localhost' });
  });
  afterAll(async () => {
    await elsewhere?.close();
    await registry?.close();
  });

  it('a catalog Link to another host is not followed: the read fails naming it, the host sees nothing', async () => {
    const front = await registryFront(registry.url, {
      rewrite: (req, answer) =>
        req.url?.startsWith('/v2/_catalog')
          ? { ...answer, headers: { ...answer.headers, link: `<${elsewhere.at('/v2/_catalog?last=x')}>; rel="next"` } }
          : answer,
    });
    try {
      const err = await failure(readRegistryProject({ source: source(front.url), config, logger: quietLogger }));
      expect(err.message).toBe(
        `registry ${new URL(front.url).host}: the catalog: the next page's Link names ${elsewhere.at('/v2/_catalog?last=x')}, not the registry (${front.url}); not followed`,
      );
    } finally {
      await front.close();
    }
    expect(elsewhere.requests).toEqual([]);
  });

  it("a repository's tag list linking elsewhere, paging past maxItems, or failing: that image is unread, the others are read", async () => {
    const front = await registryFront(registry.url, {
      answer(req, res) {
        const url = new URL(req.url ?? '/', 'http://x');
        if (url.pathname === `/v2/${PROJECT}/ubuntu/tags/list` && req.headers.authorization) {
          const page = Number(url.searchParams.get('page') ?? 0);
          const tags = Array.from({ length: 100 }, (_, i) => `${page}.${i}`);
          return send(
            res,
            json({ name: `${PROJECT}/ubuntu`, tags }, `</v2/${PROJECT}/ubuntu/tags/list?page=${page + 1}>; rel="next"`),
          );
        }
        if (url.pathname === `/v2/${PROJECT}/almalinux/tags/list` && req.headers.authorization)
          return send(res, json({ tags: ['9'] }, `<${elsewhere.at('/tags?page=2')}>; rel="next"`));
        if (url.pathname === `/v2/${PROJECT}/debian/tags/list` && req.headers.authorization)
          return send(res, { status: 500, headers: {}, body: Buffer.from('oops') });
        return false;
      },
    });
    try {
      // maxItems from the site's configuration, as the worker reads it.
      const site = configFor({ reader: `${READER.user}:${READER.password}` }, [
        { registry: front.url, project: PROJECT, credential: 'reader', plainHttpOnLoopback: true, maxItems: 250 },
      ]);
      const read = await readRegistryProject({
        source: { registry: front.url, project: PROJECT, credential: 'reader', api: 'distribution' },
        config: site,
        logger: quietLogger,
      });
      expect(read.images).toEqual([]);
      expect(read.invalid).toEqual([]);
      expect(read.unread).toEqual([
        {
          imageId: 'almalinux',
          problem: expect.stringContaining(
            `the next page's Link names ${elsewhere.at('/tags?page=2')}, not the registry`,
          ),
        },
        { imageId: 'debian', problem: expect.stringContaining('HTTP 500') },
        {
          imageId: 'ubuntu',
          problem: expect.stringContaining(`the tags of ${PROJECT}/ubuntu has more than 250 names (maxItems)`),
        },
      ]);
      expect(
        front.requests.filter((r) => r.url.startsWith(`/v2/${PROJECT}/ubuntu/tags/list`) && r.authorization),
      ).toHaveLength(3);
    } finally {
      await front.close();
    }
    expect(elsewhere.requests).toEqual([]);
  });

  it('an invalid manifest under the only tag, or a tag gone while reading (404): unread and kept, never dropped', async () => {
    const front = await registryFront(registry.url, {
      answer(req, res) {
        if (req.url === `/v2/${PROJECT}/debian/manifests/12` && req.headers.authorization)
          return send(res, {
            status: 404,
            headers: { 'content-type': 'application/json' },
            body: Buffer.from('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'),
          });
        return false;
      },
    });
    // Re-pushed as something that is not a disk image: read, and not registrable.
    const container = await registry.push(`${PROJECT}/almalinux`, {
      tags: ['9'],
      disk: randomBytes(512),
      layerMediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    });
    try {
      const read = await readRegistryProject({ source: source(front.url), config, logger: quietLogger });
      expect(read.images.map((i) => i.event.imageId)).toEqual(['ubuntu']);
      expect(read.invalid).toEqual([
        {
          identifier: `${PROJECT}/almalinux:9`,
          problem: expect.stringContaining('expected exactly one layer of type application/x-qemu-disk'),
        },
      ]);
      expect(read.unread).toEqual([
        {
          imageId: 'almalinux',
          problem: `none of the 1 selected tags of ${PROJECT}/almalinux can be registered (see invalid); its image is kept`,
        },
        {
          imageId: 'debian',
          problem: expect.stringMatching(/^egi_vm_images\/debian:12: the tag disappeared while reading: .*HTTP 404/),
        },
      ]);
    } finally {
      await front.close();
      await registry.tag(`${PROJECT}/almalinux`, pushed.almalinux.manifestDigest, '9');
    }
    expect(container.manifestDigest).not.toBe(pushed.almalinux.manifestDigest);
  });

  it('a hostile listing cannot reach another project: repository and tag names that read as paths are refused, never requested', async () => {
    const front = await registryFront(registry.url, {
      rewrite(req, answer) {
        if (req.url?.startsWith('/v2/_catalog') && answer.status === 200)
          return json({ repositories: [`${PROJECT}/../other_project/debian`, `${PROJECT}/ubuntu`] });
        if (req.url?.startsWith(`/v2/${PROJECT}/ubuntu/tags/list`) && answer.status === 200)
          return json({ tags: ['22.04', '../../../other_project/debian/manifests/12'] });
        return answer;
      },
    });
    try {
      const read = await readRegistryProject({
        source: source(front.url, { tags: '.*' }),
        config,
        logger: quietLogger,
      });
      expect(read.listId).toBe(`${new URL(front.url).host}/${PROJECT}`);
      expect(read.images.map((i) => [i.event.imageListId, i.event.imageId, i.event.checksumSha256])).toEqual([
        [read.listId, 'ubuntu', pushed.ubuntu.layerDigest.slice(7)],
      ]);
      expect(read.invalid).toEqual([
        {
          identifier: `${PROJECT}/../other_project/debian`,
          problem: `'${PROJECT}/../other_project/debian' is not a repository name; skipped`,
        },
        {
          identifier: `${PROJECT}/ubuntu:../../../other_project/debian/manifests/12`,
          problem: "'../../../other_project/debian/manifests/12' is not a tag name; skipped",
        },
      ]);
      expect(front.requests.filter((r) => r.url.includes('other_project'))).toEqual([]);
    } finally {
      await front.close();
    }
  });

  it("an annotation naming ROOT_PARTITION, USERS, OSFAMILY, a checksum or another list sets nothing: identity is the configuration's", async () => {
    const hostile = await registry.push(`${PROJECT}/hostile`, {
      tags: ['1'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('hostile', '1', {
        'org.openstack.glance.ROOT_PARTITION': '2',
        'org.openstack.glance.USERS': 'root',
        'org.openstack.glance.OSFAMILY': 'windows',
        'org.openstack.glance.EXCLUDE_ALL_TASKS': 'yes',
        'org.openstack.glance.PASSWORD': 'x',
        'org.openstack.glance.VMCATCHER_EVENT_SL_CHECKSUM_SHA512': 'f'.repeat(128),
        'org.openstack.glance.VMCATCHER_IL_DC_IDENTIFIER': `${registry.host}_other_project`,
        'org.openstack.glance.VMCATCHER_DC_IDENTIFIER': 'debian',
        'eu.egi.cloud.ROOT_PARTITION': '3',
      }),
    });
    try {
      const read = await readRegistryProject({
        source: source(registry.url, { repositories: ['hostile'] }),
        config,
        logger: quietLogger,
      });
      const event = read.images[0].event;
      expect(event).toMatchObject({
        imageListId: `${registry.host}/${PROJECT}`,
        imageId: 'hostile',
        osName: 'hostile',
      });
      expect(event.checksumSha512).toBeUndefined();
      expect(Object.keys(event.properties ?? {}).sort()).toEqual(
        [
          'architecture',
          'container_format',
          'disk_format',
          'eu.egi.cloud.description',
          'eu.egi.cloud.tag',
          'org.opencontainers.image.created',
          'org.opencontainers.image.ref.digest',
          'org.opencontainers.image.revision',
          'org.opencontainers.image.source',
          'os_admin_user',
          'os_distro',
          'os_type',
          'os_version',
        ].sort(),
      );
      const { properties } = buildImageProperties({ event, options: {}, metadata: {} });
      for (const key of [
        'ROOT_PARTITION',
        'USERS',
        'EXCLUDE_ALL_TASKS',
        'PASSWORD',
        'VMCATCHER_EVENT_SL_CHECKSUM_SHA512',
      ])
        expect(properties[key]).toBeUndefined();
      // OSFAMILY is snf-mkimage's, else the event's os (os_type, as a list's sl:os): never the annotation's 'windows'.
      expect(properties.OSFAMILY).toBe('linux');
      expect(properties).toMatchObject({
        VMCATCHER_DC_IDENTIFIER: 'hostile',
        VMCATCHER_IL_DC_IDENTIFIER: imageIdentity(event).imageListId,
        VMCATCHER_EVENT_SL_CHECKSUM_SHA256: hostile.layerDigest.slice(7),
      });
      expect(imageIdentity(event).imageListId).toBe(`${registry.host}_${PROJECT}`.replace(/[^A-Za-z0-9._-]/g, '_'));
    } finally {
      await registry.deleteManifest(`${PROJECT}/hostile`, hostile.manifestDigest);
    }
  });
});

describe('a tag moved back to an older image than the one registered', () => {
  let registry: TestRegistry;
  const source = () => ({
    registry: registry.url,
    project: PROJECT,
    credential: 'reader',
    plainHttpOnLoopback: true,
    tags: '.*',
  });
  const read = (previous: ListedImage[]) =>
    readRegistryProject({ source: source(), config, logger: quietLogger, previous });
  /** A read given what a large project's copy carries instead of its images (oci/remembered.ts). */
  const readRemembering = (previous: ReadRegistryProject) =>
    readRegistryProject({ source: source(), config, logger: quietLogger, memory: previous.memory });

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'htpasswd', users: { [READER.user]: READER.password } });
  });
  afterAll(async () => {
    await registry?.close();
  });

  it('the same tag on a manifest created before the registered one is refused; the registered image stays current', async () => {
    const repo = `${PROJECT}/ubuntu`;
    const march = await registry.push(repo, {
      tags: ['22.04'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('ubuntu', '22.04', { 'org.opencontainers.image.created': '2025-03-01T00:00:00Z' }),
    });
    const april = await registry.push(repo, {
      tags: ['22.04'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('ubuntu', '22.04', { 'org.opencontainers.image.created': '2025-04-01T00:00:00Z' }),
    });
    const first = await read([]);
    expect(first.images.map((i) => i.event.checksumSha256)).toEqual([april.layerDigest.slice(7)]);
    // A newer manifest over the accepted one is taken.
    const again = await read(first.images);
    expect(again.invalid).toEqual([]);

    await registry.tag(repo, march.manifestDigest, '22.04');
    const back = await read(first.images);
    expect(back.invalid).toEqual([
      {
        identifier: `${repo}:22.04`,
        problem:
          'tag 22.04 moved back to a manifest created 2025-03-01T00:00:00Z, before the one registered last (2025-04-01T00:00:00Z): refused, as an older hv:version is; the image registered last stays current',
      },
    ]);
    expect(back.images).toEqual(first.images);
    expect(back.unread).toEqual([]);
    await registry.deleteManifest(repo, march.manifestDigest);
  });

  it('a newest tag removed so that an older tag is the newest: refused, the registered image stays current', async () => {
    const repo = `${PROJECT}/alma`;
    await registry.push(repo, { tags: ['8'], disk: randomBytes(1024), annotations: egiAnnotations('alma', '8') });
    const nine = await registry.push(repo, {
      tags: ['9'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('alma', '9'),
    });
    const first = (await read([])).images.filter((i) => i.event.imageId === 'alma');
    expect(first.map((i) => i.event.version)).toEqual(['9']);
    await registry.deleteManifest(repo, nine.manifestDigest);
    const back = await read(first);
    expect(back.invalid).toContainEqual({
      identifier: `${repo}:8`,
      problem:
        'tag 8 is older than 9, the tag registered last: refused, as an older hv:version is; the image registered last stays current',
    });
    expect(back.images.filter((i) => i.event.imageId === 'alma')).toEqual(first);
  });

  it('a copy without the images: the same refusal, and the registered image, read back by its digest, stays current', async () => {
    const repo = `${PROJECT}/rocky`;
    const older = await registry.push(repo, {
      tags: ['9'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('rocky', '9', { 'org.opencontainers.image.created': '2025-03-01T00:00:00Z' }),
    });
    await registry.push(repo, {
      tags: ['9'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('rocky', '9', { 'org.opencontainers.image.created': '2025-04-01T00:00:00Z' }),
    });
    const first = await read([]);
    const rocky = first.images.filter((i) => i.event.imageId === 'rocky');
    await registry.tag(repo, older.manifestDigest, '9');
    const back = await readRemembering(first);
    expect(back.invalid).toContainEqual({
      identifier: `${repo}:9`,
      problem:
        'tag 9 moved back to a manifest created 2025-03-01T00:00:00Z, before the one registered last (2025-04-01T00:00:00Z): refused, as an older hv:version is; the image registered last stays current',
    });
    expect(back.images.filter((i) => i.event.imageId === 'rocky')).toEqual(rocky);
    expect(back.unread.filter((u) => u.imageId === 'rocky')).toEqual([]);
    // The next read still knows which image is current.
    expect((await readRemembering(back)).images.filter((i) => i.event.imageId === 'rocky')).toEqual(rocky);
  });

  it('a copy without the images, the registered manifest deleted: the same refusal; the image cannot be read back, so it is kept as unread', async () => {
    const repo = `${PROJECT}/centos`;
    await registry.push(repo, { tags: ['7'], disk: randomBytes(1024), annotations: egiAnnotations('centos', '7') });
    const eight = await registry.push(repo, {
      tags: ['8'],
      disk: randomBytes(1024),
      annotations: egiAnnotations('centos', '8'),
    });
    const first = await read([]);
    await registry.deleteManifest(repo, eight.manifestDigest);
    const back = await readRemembering(first);
    expect(back.invalid).toContainEqual({
      identifier: `${repo}:7`,
      problem:
        'tag 7 is older than 8, the tag registered last: refused, as an older hv:version is; the image registered last stays current',
    });
    expect(back.images.filter((i) => i.event.imageId === 'centos')).toEqual([]);
    expect(back.unread.filter((u) => u.imageId === 'centos')).toEqual([
      {
        imageId: 'centos',
        problem: expect.stringMatching(
          new RegExp(
            `^tag 7 is older than 8, the tag registered last, and the image registered last \\(${repo}@${eight.manifestDigest}\\) could not be read back: `,
          ),
        ) as unknown as string,
      },
    ]);
    // Kept as it was accepted: the next read refuses tag 7 again.
    const again = await readRemembering(back);
    expect(again.invalid.map((i) => i.identifier)).toContain(`${repo}:7`);
    expect(again.unread.map((u) => u.imageId)).toContain('centos');
  });
});

describe('a listing that never ends', () => {
  /** An anonymous "registry" whose catalog pages on forever (each page `perPage` new names). */
  async function endlessCatalog(perPage: number, onPage?: (page: number) => void) {
    const state = { pages: 0 };
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname !== '/v2/_catalog') return void res.writeHead(404).end();
      const page = ++state.pages;
      onPage?.(page);
      const repositories = Array.from({ length: perPage }, (_, i) => `${PROJECT}/r${page}-${i}`);
      res
        .writeHead(200, {
          'content-type': 'application/json',
          link: `</v2/_catalog?n=${perPage}&last=r${page}>; rel="next"`,
        })
        .end(JSON.stringify({ repositories }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      state,
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
  const anonymous = (url: string): RegistrySource => ({ registry: url, project: PROJECT, api: 'distribution' });

  it('stops at 1,000 pages (the default maxPages): the read fails, no page past the cap is asked for, memory stays bounded', async () => {
    const server = await endlessCatalog(1);
    try {
      const before = process.memoryUsage().heapUsed;
      const err = await failure(readRegistryProject({ source: anonymous(server.url), config, logger: quietLogger }));
      expect(err.message).toBe(
        `registry ${new URL(server.url).host}: the catalog goes on past 1000 pages (maxPages); the listing was stopped, nothing of it is used`,
      );
      expect(server.state.pages).toBe(1000);
      // 1,000 small pages: what is kept is bounded by the caps, not by the server.
      expect(process.memoryUsage().heapUsed - before).toBeLessThan(256 * 1024 * 1024);
    } finally {
      await server.close();
    }
  });

  it('stops at 100,000 names (the default maxItems), before the page cap', async () => {
    const server = await endlessCatalog(1000);
    try {
      const err = await failure(readRegistryProject({ source: anonymous(server.url), config, logger: quietLogger }));
      expect(err.message).toBe(
        `registry ${new URL(server.url).host}: the catalog has more than 100000 names (maxItems); the listing was stopped, nothing of it is used`,
      );
      expect(server.state.pages).toBe(101);
    } finally {
      await server.close();
    }
  });

  it('stops when the activity is cancelled: no page after the one in flight', async () => {
    const controller = new AbortController();
    const server = await endlessCatalog(10, (page) => {
      if (page === 5) controller.abort(new Error('activity cancelled'));
    });
    try {
      const err = await readRegistryProject({
        source: anonymous(server.url),
        config,
        logger: quietLogger,
        signal: controller.signal,
      }).catch((e: unknown) => e as Error);
      expect(err).toBeInstanceOf(Error);
      expect(controller.signal.aborted).toBe(true);
      expect(server.state.pages).toBe(5);
    } finally {
      await server.close();
    }
  });
});

describe('a blob answer that does not start where the range asked', () => {
  it('is a transient fault: the file is kept and the next attempt asks for the range again', async () => {
    const blob = randomBytes(40_000);
    const digest = `sha256:${(await import('node:crypto')).createHash('sha256').update(blob).digest('hex')}`;
    const ranges: Array<string | undefined> = [];
    const server = http.createServer((req, res) => {
      ranges.push(req.headers.range);
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      // The first resumed request gets the blob from 0 while claiming a 206: the wrong range.
      const from = ranges.length === 1 ? 0 : start;
      res
        .writeHead(206, {
          'content-range': `bytes ${from}-${blob.length - 1}/${blob.length}`,
          'content-length': String(blob.length - from),
        })
        .end(blob.subarray(from));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const { dir, cleanup } = await tempDir('oci-trust-');
    const client = new RegistryClient({ registry: new URL(url), security: config.security });
    try {
      const file = path.join(dir, 'disk');
      await writeFile(file, blob.subarray(0, 10_000));
      const err = await failure(downloadBlob(client, `${PROJECT}/ubuntu`, { digest, size: blob.length }, file));
      expect(err.permanent).toBe(false);
      expect(err.message).toBe(
        `registry 127.0.0.1:${new URL(url).port} ${PROJECT}/ubuntu@${digest}: asked for bytes from 10000, the answer's Content-Range is 'bytes 0-39999/40000'; the range is asked again`,
      );
      expect((await stat(file)).size).toBe(10_000);
      const done = await downloadBlob(client, `${PROJECT}/ubuntu`, { digest, size: blob.length }, file);
      expect(done).toMatchObject({ bytes: blob.length, resumedFrom: 10_000 });
      expect((await readFile(file)).equals(blob)).toBe(true);
      expect(ranges).toEqual(['bytes=10000-', 'bytes=10000-']);
    } finally {
      await client.close();
      await cleanup();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
