import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request } from 'undici';
import { parseConfig } from '../../core/config.js';
import { FetchError, ImageIntegrityError } from '../../core/errors.js';
import { imageIdentity } from '../../core/workflow-contract.js';
import { downloadBlob } from '../../oci/blob.js';
import { RegistryClient, resolveRegistryLogin } from '../../oci/client.js';
import { registryListId } from '../../core/config.js';
import { listRepositories, listTags, readManifest, readRegistryProject } from '../../oci/source.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { quietLogger, tempDir } from '../support/pipeline-fixtures.js';
import {
  digestOf,
  egiAnnotations,
  startRegistry,
  type PushedArtifact,
  type TestRegistry,
} from '../support/registry.js';

/**
 * The OCI source against a real registry (Debian's docker-registry on 127.0.0.1), with artifacts
 * pushed as `oras push` pushes EGI's images: listing a project, selecting tags, reading
 * manifests, mapping annotations, basic and Bearer auth, refusals.
 */

const PROJECT = 'egi_vm_images';
const READER = { user: 'reader', password: randomBytes(9).toString('hex') };

/** The client's side of TestRegistry.access: plain http to 127.0.0.1 by explicit opt-in, the test token service named. */
function clientAccess(registry: { access: TestRegistry['access'] }) {
  return {
    plainHttpOnLoopback: registry.access.plainHttpOnLoopback,
    tokenRealms: registry.access.tokenRealm ? [registry.access.tokenRealm] : [],
  };
}

function configFor(credentials: Record<string, string> = {}) {
  return parseConfig({ security: { credentials } }, 'test');
}

const ubuntuDisk = randomBytes(64 * 1024);
const almaDisk = randomBytes(48 * 1024);

async function pushEgiProject(registry: TestRegistry): Promise<{ ubuntu: PushedArtifact; alma: PushedArtifact }> {
  const ubuntu = await registry.push(`${PROJECT}/ubuntu`, {
    tags: ['22.04', '22.04-20250301-1a2b3c4'],
    disk: ubuntuDisk,
    annotations: egiAnnotations('ubuntu', '22.04'),
  });
  // Older oras: its own config type, no artifactType.
  const alma = await registry.push(`${PROJECT}/almalinux`, {
    tags: ['9', '9-20250301-5e6f7a8'],
    disk: almaDisk,
    annotations: egiAnnotations('almalinux', '9'),
    config: 'oras',
  });
  // Not the project's: never listed.
  await registry.push('other_project/debian', {
    tags: ['12'],
    disk: randomBytes(1024),
    annotations: egiAnnotations('debian', '12'),
  });
  return { ubuntu, alma };
}

describe('OCI registry with htpasswd basic auth', () => {
  let registry: TestRegistry;
  let pushed: { ubuntu: PushedArtifact; alma: PushedArtifact };
  const config = configFor({ reader: `${READER.user}:${READER.password}`, wrong: `${READER.user}:not-the-password` });

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'htpasswd', users: { [READER.user]: READER.password } });
    pushed = await pushEgiProject(registry);
  });
  afterAll(async () => {
    await registry?.close();
  });

  it('lists the repositories of the project only, through the catalog (not Harbor)', async () => {
    const client = new RegistryClient({
      registry: new URL(registry.url),
      login: await resolveRegistryLogin(config, 'reader'),
      security: config.security,
      ...clientAccess(registry),
    });
    try {
      expect(await listRepositories(client, PROJECT)).toEqual([`${PROJECT}/almalinux`, `${PROJECT}/ubuntu`]);
      expect((await listTags(client, `${PROJECT}/ubuntu`)).sort()).toEqual(['22.04', '22.04-20250301-1a2b3c4']);
    } finally {
      await client.close();
    }
  });

  it('selects the short tags by default and maps each manifest to an event with its annotations', async () => {
    const read = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, credential: 'reader', ...registry.access },
      config,
      logger: quietLogger,
    });
    expect(read.listId).toBe(registryListId(registry.url, PROJECT));
    expect(read.invalid).toEqual([]);
    const events = Object.fromEntries(read.images.map((i) => [i.event.imageId, i.event]));
    expect(Object.keys(events).sort()).toEqual(['almalinux', 'ubuntu']);
    const ubuntu = events.ubuntu;
    expect(ubuntu).toMatchObject({
      imageListId: `${registry.host}/${PROJECT}`,
      imageId: 'ubuntu',
      version: '22.04',
      uri: `${registry.url}/v2/${PROJECT}/ubuntu/blobs/${pushed.ubuntu.layerDigest}`,
      size: ubuntuDisk.length,
      checksumSha256: pushed.ubuntu.layerDigest.slice('sha256:'.length),
      format: 'qcow2',
      osName: 'ubuntu',
      osVersion: '22.04',
      os: 'linux',
      arch: 'x86_64',
      description: 'EGI ubuntu 22.04 image',
    });
    expect(ubuntu.properties).toMatchObject({
      os_distro: 'ubuntu',
      os_version: '22.04',
      os_type: 'linux',
      architecture: 'x86_64',
      os_admin_user: 'ubuntu',
      disk_format: 'qcow2',
      container_format: 'bare',
      'eu.egi.cloud.tag': '22.04-20250301-1a2b3c4',
      'eu.egi.cloud.description': 'EGI ubuntu 22.04 image',
      'org.opencontainers.image.revision': '1a2b3c4d5e6f',
      'org.opencontainers.image.source': 'https://github.com/EGI-Federation/fedcloud-vmi-templates',
      'org.opencontainers.image.ref.digest': pushed.ubuntu.manifestDigest,
    });
    // The revision is the disk's content: a new layer is a new revision, a re-tag is not.
    expect(imageIdentity(ubuntu).revision).toBe(`sha256-${pushed.ubuntu.layerDigest.slice(7, 39)}`);
    expect(events.almalinux.checksumSha256).toBe(pushed.alma.layerDigest.slice(7));
  });

  it('takes another tag pattern, and reports a repository whose selected tags name different manifests', async () => {
    await registry.push(`${PROJECT}/ubuntu`, {
      tags: ['24.04'],
      disk: randomBytes(2048),
      annotations: egiAnnotations('ubuntu', '24.04'),
    });
    try {
      const long = await readRegistryProject({
        source: {
          registry: registry.url,
          project: PROJECT,
          credential: 'reader',
          tags: '^22\\.04-',
          ...registry.access,
        },
        config,
        logger: quietLogger,
      });
      expect(long.images.map((i) => `${i.event.imageId}:${i.event.version}`)).toEqual([
        'ubuntu:22.04-20250301-1a2b3c4',
      ]);
      const both = await readRegistryProject({
        source: { registry: registry.url, project: PROJECT, credential: 'reader', ...registry.access },
        config,
        logger: quietLogger,
      });
      const ubuntu = both.images.find((i) => i.event.imageId === 'ubuntu')!;
      expect(ubuntu.event.version).toBe('24.04');
      expect(both.invalid).toEqual([
        { identifier: `${PROJECT}/ubuntu:22.04`, problem: expect.stringContaining('name different manifests') },
      ]);
    } finally {
      // Back to one short tag per repository for the other tests.
      await registry.tag(`${PROJECT}/ubuntu`, pushed.ubuntu.manifestDigest, '24.04');
    }
  });

  it('refuses a manifest without a qemu disk layer, naming it, and keeps the other images', async () => {
    await registry.push(`${PROJECT}/container`, {
      tags: ['1'],
      disk: randomBytes(512),
      layerMediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    });
    const read = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, credential: 'reader', ...registry.access },
      config,
      logger: quietLogger,
    });
    expect(read.invalid).toContainEqual({
      identifier: `${PROJECT}/container:1`,
      problem: expect.stringMatching(
        /container:1: expected exactly one layer of type application\/x-qemu-disk, found 0 \(layers: application\/vnd\.oci\.image\.layer\.v1\.tar\+gzip\)/,
      ),
    });
    expect(read.images.map((i) => i.event.imageId).sort()).toEqual(['almalinux', 'ubuntu']);
  });

  it('wrong credentials: a permanent error naming the registry and the credential', async () => {
    const failure = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, credential: 'wrong', ...registry.access },
      config,
      logger: quietLogger,
    }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(FetchError);
    expect((failure as FetchError).permanent).toBe(true);
    expect((failure as FetchError).message).toMatch(
      new RegExp(`^registry ${registry.host} refused the credential 'wrong' \\(user reader\\) .*\\(HTTP 401\\)`),
    );
    expect((failure as FetchError).message).not.toContain('not-the-password');
  });

  it('no credential where the registry wants one: a permanent error that says to name one', async () => {
    const failure = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, ...registry.access },
      config,
      logger: quietLogger,
    }).catch((e: unknown) => e);
    expect((failure as FetchError).permanent).toBe(true);
    expect((failure as FetchError).message).toMatch(
      new RegExp(`^registry ${registry.host} requires a login .*name a credential in the subscription`),
    );
  });

  it('downloads a layer by digest, verified, and resumes a partial file with Range', async () => {
    const { dir, cleanup } = await tempDir('oci-blob-');
    const client = new RegistryClient({
      registry: new URL(registry.url),
      login: await resolveRegistryLogin(config, 'reader'),
      security: config.security,
      ...clientAccess(registry),
    });
    try {
      const manifest = await readManifest(client, `${PROJECT}/ubuntu`, '22.04');
      expect(manifest.digest).toBe(pushed.ubuntu.manifestDigest);
      const file = path.join(dir, 'disk');
      await writeFile(file, ubuntuDisk.subarray(0, 10_000));
      const done = await downloadBlob(client, `${PROJECT}/ubuntu`, manifest.disk, file);
      expect(done).toEqual({
        bytes: ubuntuDisk.length,
        resumedFrom: 10_000,
        sha256: pushed.ubuntu.layerDigest.slice(7),
      });
      expect((await readFile(file)).equals(ubuntuDisk)).toBe(true);
    } finally {
      await client.close();
      await cleanup();
    }
  });

  it('a layer whose bytes do not match its digest is refused and its file removed', async () => {
    const { dir, cleanup } = await tempDir('oci-blob-');
    const corrupt = await registry.push(`${PROJECT}/corrupt`, {
      tags: ['1'],
      disk: randomBytes(4096),
      annotations: egiAnnotations('corrupt', '1'),
    });
    const tampered = randomBytes(4096);
    await registry.corruptBlob(corrupt.layerDigest, tampered);
    const client = new RegistryClient({
      registry: new URL(registry.url),
      login: await resolveRegistryLogin(config, 'reader'),
      security: config.security,
      ...clientAccess(registry),
    });
    try {
      const manifest = await readManifest(client, `${PROJECT}/corrupt`, '1');
      const file = path.join(dir, 'disk');
      const failure = await downloadBlob(client, `${PROJECT}/corrupt`, manifest.disk, file).catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(ImageIntegrityError);
      expect((failure as Error).message).toBe(
        `registry ${registry.host} ${PROJECT}/corrupt@${corrupt.layerDigest}: the blob's bytes have sha256 ${digestOf(tampered).slice(7)}, not the digest the manifest names; refused`,
      );
      await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await client.close();
      await cleanup();
    }
  });
});

/**
 * A front for the real registry that sends blob downloads to storage on another host (as Harbor
 * and registries on S3 do with a 307 to a signed URL) and passes every other request through.
 */
async function redirectingFront(
  registryUrl: string,
  blobStore: TestServer,
): Promise<{ url: string; authorizations: Array<string | undefined>; close(): Promise<void> }> {
  const authorizations: Array<string | undefined> = [];
  const server = http.createServer((req, res) => {
    authorizations.push(req.headers.authorization);
    const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
    if (blob && req.headers.authorization) {
      res.writeHead(307, { location: blobStore.at(`/blobs/${blob[1]}`) }).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers.host;
    request(new URL(req.url ?? '/', registryUrl), { method: req.method as 'GET', headers })
      .then(async (answer) => {
        res.writeHead(answer.statusCode, answer.headers as http.OutgoingHttpHeaders);
        res.end(Buffer.from(await answer.body.arrayBuffer()));
      })
      .catch((err: Error) => res.writeHead(502).end(err.message));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    authorizations,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('OCI registry redirecting blobs to storage on another host', () => {
  it('follows the redirect without the registry credentials, and still verifies the bytes', async () => {
    const registry = await startRegistry({ auth: 'htpasswd', users: { [READER.user]: READER.password } });
    const disk = randomBytes(20_000);
    const { dir, cleanup } = await tempDir('oci-blob-');
    const config = configFor({ reader: `${READER.user}:${READER.password}` });
    let blobStore: TestServer | undefined;
    let front: Awaited<ReturnType<typeof redirectingFront>> | undefined;
    try {
      const pushed = await registry.push(`${PROJECT}/ubuntu`, {
        tags: ['22.04'],
        disk,
        annotations: egiAnnotations('ubuntu', '22.04'),
      });
      // Another host name than the registry's (localhost, not 127.0.0.1): credentials must not follow.
      blobStore = await startTestServer({
        hostname: 'localhost',
        routes: { [`/blobs/${pushed.layerDigest}`]: { body: disk } },
      });
      front = await redirectingFront(registry.url, blobStore);
      const client = new RegistryClient({
        registry: new URL(front.url),
        login: await resolveRegistryLogin(config, 'reader'),
        security: config.security,
        ...clientAccess(registry),
      });
      try {
        const file = path.join(dir, 'disk');
        const done = await downloadBlob(
          client,
          `${PROJECT}/ubuntu`,
          { digest: pushed.layerDigest, size: pushed.layerSize },
          file,
        );
        expect(done.sha256).toBe(pushed.layerDigest.slice(7));
        expect((await readFile(file)).equals(disk)).toBe(true);
      } finally {
        await client.close();
      }
      expect(front.authorizations.at(-1)).toMatch(/^Basic /);
      expect(blobStore.requests).toHaveLength(1);
      expect(blobStore.requests[0].headers.authorization).toBeUndefined();
    } finally {
      await front?.close();
      await blobStore?.close();
      await registry.close();
      await cleanup();
    }
  });
});

describe('OCI registry with the Bearer token flow', () => {
  let registry: TestRegistry;
  let pushed: { ubuntu: PushedArtifact; alma: PushedArtifact };
  const config = configFor({ reader: `${READER.user}:${READER.password}`, wrong: `${READER.user}:not-the-password` });

  beforeAll(async () => {
    registry = await startRegistry({ auth: 'token', users: { [READER.user]: READER.password } });
    pushed = await pushEgiProject(registry);
  });
  afterAll(async () => {
    await registry?.close();
  });

  it('gets a token per scope from the realm the challenge names, with the login, and reads the project', async () => {
    registry.tokenRequests.length = 0;
    const read = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, credential: 'reader', ...registry.access },
      config,
      logger: quietLogger,
    });
    expect(read.images.map((i) => [i.event.imageId, i.event.checksumSha256]).sort()).toEqual([
      ['almalinux', pushed.alma.layerDigest.slice(7)],
      ['ubuntu', pushed.ubuntu.layerDigest.slice(7)],
    ]);
    expect(registry.tokenRequests).toEqual([
      { account: READER.user, user: READER.user, scopes: ['registry:catalog:*'] },
      { account: READER.user, user: READER.user, scopes: [`repository:${PROJECT}/almalinux:pull`] },
      { account: READER.user, user: READER.user, scopes: [`repository:${PROJECT}/ubuntu:pull`] },
    ]);
  });

  it('downloads a layer with the repository token', async () => {
    const { dir, cleanup } = await tempDir('oci-blob-');
    const client = new RegistryClient({
      registry: new URL(registry.url),
      login: await resolveRegistryLogin(config, 'reader'),
      security: config.security,
      ...clientAccess(registry),
    });
    try {
      const file = path.join(dir, 'disk');
      const done = await downloadBlob(
        client,
        `${PROJECT}/almalinux`,
        { digest: pushed.alma.layerDigest, size: pushed.alma.layerSize },
        file,
      );
      expect(done.sha256).toBe(pushed.alma.layerDigest.slice(7));
      expect((await readFile(file)).equals(almaDisk)).toBe(true);
    } finally {
      await client.close();
      await cleanup();
    }
  });

  it('wrong credentials: the token service refuses them, a permanent error naming the registry', async () => {
    const failure = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, credential: 'wrong', ...registry.access },
      config,
      logger: quietLogger,
    }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(FetchError);
    expect((failure as FetchError).permanent).toBe(true);
    expect((failure as FetchError).message).toBe(
      `registry ${registry.host}: its token service ${registry.tokenRealm} refused the credential 'wrong' (user reader) (HTTP 401) for ${registry.url}/v2/_catalog?n=100`,
    );
  });

  it('anonymous: a token without access, so the registry refuses; the error says anonymous access', async () => {
    const failure = await readRegistryProject({
      source: { registry: registry.url, project: PROJECT, ...registry.access },
      config,
      logger: quietLogger,
    }).catch((e: unknown) => e);
    expect((failure as FetchError).permanent).toBe(true);
    expect((failure as FetchError).message).toMatch(
      new RegExp(`^registry ${registry.host} refused anonymous access for .*_catalog.* \\(HTTP 401\\)`),
    );
  });
});
