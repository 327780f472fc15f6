import { createHash, createPrivateKey, randomBytes, randomUUID, sign, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { request } from 'undici';
import { freePort } from './bridge.js';

/**
 * A real OCI registry for tests: Debian's docker-registry (the CNCF distribution server,
 * installed by scripts/setup-registry.sh) serving on 127.0.0.1 on a free port, storing in a
 * temporary folder, behind htpasswd basic auth or the distribution token flow (a small token
 * service of our own that signs the JWTs the registry verifies against a certificate made with
 * openssl). Artifacts are pushed the way `oras push` pushes them: a config blob, one
 * `application/x-qemu-disk` layer and an OCI image manifest with annotations, over the
 * registry's HTTP API.
 */

export type RegistryAuth = 'htpasswd' | 'token' | 'none';

export interface TokenRequest {
  account?: string;
  scopes: string[];
  /** The user name of the Basic header, or undefined for an anonymous request. */
  user?: string;
}

export interface TestRegistry {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** `127.0.0.1:PORT` */
  host: string;
  /** The filesystem storage root (for corrupting a blob on purpose). */
  storage: string;
  /** Requests the token service answered (token auth only). */
  tokenRequests: TokenRequest[];
  /** The token service's URL (token auth only). */
  tokenRealm?: string;
  /**
   * What a subscription (or a RegistrySource) must say to use this registry: it serves plain http
   * on 127.0.0.1, so the login may travel in clear only by this explicit opt-in, and its token
   * service is on another port, so it is named as the tokenRealm.
   */
  access: { plainHttpOnLoopback: true; tokenRealm?: string };
  push(repository: string, artifact: ArtifactToPush): Promise<PushedArtifact>;
  /** Points `tag` at an already pushed manifest (as `oras tag`). */
  tag(repository: string, manifestDigest: string, tag: string): Promise<void>;
  /** Deletes a manifest and with it every tag naming it (as `oras manifest delete`). */
  deleteManifest(repository: string, manifestDigest: string): Promise<void>;
  /** Overwrites a stored blob's bytes: the registry serves them under the old digest. */
  corruptBlob(digest: string, bytes: Buffer): Promise<void>;
  /** The registry's log so far (for a failing test's message). */
  log(): string;
  close(): Promise<void>;
}

export interface ArtifactToPush {
  tags: string[];
  disk: Buffer;
  /** Manifest annotations (EGI's org.openstack.glance.*, eu.egi.cloud.*, …). */
  annotations?: Record<string, string>;
  /** `empty` (image-spec 1.1, oras ≥ 1.1 with --artifact-type; the default) or `oras` (oras' own config type, as older oras pushes). */
  config?: 'empty' | 'oras';
  /** The disk layer's file name (org.opencontainers.image.title of the layer). */
  fileName?: string;
  /** Another layer media type, to test refusals. */
  layerMediaType?: string;
}

export interface PushedArtifact {
  manifestDigest: string;
  layerDigest: string;
  layerSize: number;
  manifest: Record<string, unknown>;
}

export const EGI_ARTIFACT_TYPE = 'application/vnd.egi.cloud.vm-image.v1';
const EMPTY_CONFIG = 'application/vnd.oci.empty.v1+json';
const ORAS_CONFIG = 'application/vnd.unknown.config.v1+json';

/**
 * A project of `repositories` repositories (`image-000`, `image-001`…) of `tags` tags each, as the
 * scale tests and the benchmark read it: each repository one small artifact (1 KiB of random
 * data, EGI's annotations) under a short tag (`1`) and `tags - 1` dated ones, pushed 8 at a time.
 */
export async function pushProject(
  registry: TestRegistry,
  project: string,
  { repositories, tags }: { repositories: number; tags: number },
): Promise<void> {
  const names = Array.from({ length: repositories }, (_, i) => `image-${String(i).padStart(3, '0')}`);
  const push = async (name: string) => {
    const tagged = ['1', ...Array.from({ length: tags - 1 }, (_, t) => `1-2025010${t + 1}-${name}`)];
    await registry.push(`${project}/${name}`, {
      tags: tagged,
      disk: randomBytes(1024),
      annotations: egiAnnotations(name, '1'),
    });
  };
  for (let i = 0; i < names.length; i += 8) await Promise.all(names.slice(i, i + 8).map(push));
}

/** The annotations EGI's build pipeline sets on an image (values as given). */
export function egiAnnotations(
  distro: string,
  version: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    'org.openstack.glance.disk_format': 'qcow2',
    'org.openstack.glance.container_format': 'bare',
    'org.openstack.glance.os_distro': distro,
    'org.openstack.glance.os_version': version,
    'org.openstack.glance.os_type': 'linux',
    'org.openstack.glance.architecture': 'x86_64',
    'org.openstack.glance.os_admin_user': distro,
    'eu.egi.cloud.description': `EGI ${distro} ${version} image`,
    'eu.egi.cloud.tag': `${version}-20250301-1a2b3c4`,
    'org.opencontainers.image.revision': '1a2b3c4d5e6f',
    'org.opencontainers.image.source': 'https://github.com/EGI-Federation/fedcloud-vmi-templates',
    ...extra,
  };
}

export function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

interface TokenIssuer {
  certPem: string;
  mint(subject: string, access: Array<{ type: string; name: string; actions: string[] }>): string;
}

const SERVICE = 'test-registry';
const ISSUER = 'test-token-issuer';

/** An RSA key and a self-signed certificate made with openssl: the registry trusts tokens signed by it. */
async function tokenIssuer(dir: string): Promise<TokenIssuer> {
  const keyFile = path.join(dir, 'token.key');
  const certFile = path.join(dir, 'token.crt');
  await execa('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '2',
    '-subj',
    '/CN=test token issuer',
  ]);
  const key = createPrivateKey(await readFile(keyFile));
  const certPem = await readFile(certFile, 'utf8');
  const der = new X509Certificate(certPem).raw.toString('base64');
  return {
    certPem,
    mint(subject, access) {
      const now = Math.floor(Date.now() / 1000);
      const header = base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', x5c: [der] }));
      const claims = base64url(
        JSON.stringify({
          iss: ISSUER,
          sub: subject,
          aud: SERVICE,
          exp: now + 300,
          nbf: now - 10,
          iat: now,
          jti: randomUUID(),
          access,
        }),
      );
      const signature = sign('sha256', Buffer.from(`${header}.${claims}`), key);
      return `${header}.${claims}.${base64url(signature)}`;
    },
  };
}

export interface StartRegistryOptions {
  auth: RegistryAuth;
  /** Users and their passwords (htpasswd file, or the token service's accounts). */
  users?: Record<string, string>;
  /** Token auth: give anonymous callers pull tokens (a public project). */
  anonymousPull?: boolean;
}

/** Admin user that pushes (all rights); the test users only pull. */
const PUSHER = 'pusher';

export async function startRegistry(opts: StartRegistryOptions): Promise<TestRegistry> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-registry-'));
  const users: Record<string, string> = { ...opts.users, [PUSHER]: randomBytes(12).toString('hex') };
  const port = await freePort();
  const storage = path.join(dir, 'storage');
  const tokenRequests: TokenRequest[] = [];
  let tokenServer: http.Server | undefined;
  let tokenRealm: string | undefined;
  let pushAuthorization: (repository: string) => string | undefined = () => undefined;
  let authSection = '';

  if (opts.auth === 'htpasswd') {
    const file = path.join(dir, 'htpasswd');
    let first = true;
    for (const [user, password] of Object.entries(users)) {
      // -i: the password on stdin, never on the command line; -B: bcrypt, which the registry requires.
      await execa('htpasswd', [...(first ? ['-c'] : []), '-B', '-i', file, user], { input: password });
      first = false;
    }
    authSection = `auth:\n  htpasswd:\n    realm: test-registry\n    path: ${file}\n`;
    pushAuthorization = () => `Basic ${Buffer.from(`${PUSHER}:${users[PUSHER]}`).toString('base64')}`;
  } else if (opts.auth === 'token') {
    const issuer = await tokenIssuer(dir);
    const certFile = path.join(dir, 'token.crt');
    tokenServer = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const scopes = url.searchParams.getAll('scope');
      let user: string | undefined;
      const header = req.headers.authorization;
      if (header?.startsWith('Basic ')) {
        const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        const [name, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
        if (users[name] === undefined || users[name] !== password) {
          tokenRequests.push({ account: url.searchParams.get('account') ?? undefined, scopes, user: name });
          res
            .writeHead(401, { 'content-type': 'application/json' })
            .end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
          return;
        }
        user = name;
      }
      tokenRequests.push({ account: url.searchParams.get('account') ?? undefined, scopes, user });
      if (url.pathname !== '/token' || url.searchParams.get('service') !== SERVICE) {
        res.writeHead(400).end('unknown service');
        return;
      }
      // Users may pull anything and list the catalog; anonymous callers only when the project is public.
      const access = scopes.flatMap((scope) => {
        const [type, name, actions] = [
          scope.split(':')[0],
          scope.split(':').slice(1, -1).join(':'),
          scope.split(':').at(-1) ?? '',
        ];
        const allowed = user || opts.anonymousPull ? ['pull', '*'] : [];
        const granted = actions.split(',').filter((a) => allowed.includes(a));
        return granted.length > 0 ? [{ type, name, actions: granted }] : [];
      });
      const token = issuer.mint(user ?? '', access);
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
    });
    await new Promise<void>((resolve) => tokenServer!.listen(0, '127.0.0.1', resolve));
    tokenRealm = `http://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token`;
    authSection = `auth:\n  token:\n    realm: ${tokenRealm}\n    service: ${SERVICE}\n    issuer: ${ISSUER}\n    rootcertbundle: ${certFile}\n`;
    pushAuthorization = (repository) =>
      `Bearer ${issuer.mint(PUSHER, [{ type: 'repository', name: repository, actions: ['pull', 'push', 'delete'] }])}`;
  }

  const config = path.join(dir, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(16).toString('hex')}`,
      authSection,
    ].join('\n'),
  );
  let output = '';
  const child: ResultPromise = execa('docker-registry', ['serve', config], {
    reject: false,
    stdin: 'ignore',
    all: true,
  });
  child.all?.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited (${child.exitCode}): ${output}`);
    const ok = await request(`${url}/v2/`)
      .then(async (r) => (await r.body.dump(), r.statusCode === 200 || r.statusCode === 401))
      .catch(() => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer on ${url}: ${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  async function call(
    method: 'POST' | 'PUT' | 'GET' | 'DELETE',
    target: string,
    repository: string,
    body?: Buffer | string,
    headers: Record<string, string> = {},
  ) {
    const authorization = pushAuthorization(repository);
    const response = await request(new URL(target, url), {
      method,
      body,
      headers: { ...headers, ...(authorization ? { authorization } : {}) },
    });
    const text = await response.body.text();
    if (response.statusCode >= 300) throw new Error(`${method} ${target}: HTTP ${response.statusCode}: ${text}`);
    return { headers: response.headers, text };
  }

  async function pushBlob(repository: string, bytes: Buffer): Promise<string> {
    const digest = digestOf(bytes);
    const started = await call('POST', `/v2/${repository}/blobs/uploads/`, repository);
    const location = new URL(String(started.headers.location), url);
    location.searchParams.set('digest', digest);
    await call('PUT', location.pathname + location.search, repository, bytes, {
      'content-type': 'application/octet-stream',
    });
    return digest;
  }

  async function putManifest(repository: string, reference: string, manifest: string): Promise<void> {
    await call('PUT', `/v2/${repository}/manifests/${reference}`, repository, manifest, {
      'content-type': 'application/vnd.oci.image.manifest.v1+json',
    });
  }

  return {
    url,
    host: `127.0.0.1:${port}`,
    storage,
    tokenRequests,
    tokenRealm,
    access: { plainHttpOnLoopback: true, ...(tokenRealm ? { tokenRealm } : {}) },
    async push(repository, artifact) {
      const configBytes = Buffer.from('{}');
      const configDigest = await pushBlob(repository, configBytes);
      const layerDigest = await pushBlob(repository, artifact.disk);
      const manifest: Record<string, unknown> = {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        ...(artifact.config === 'oras' ? {} : { artifactType: EGI_ARTIFACT_TYPE }),
        config: {
          mediaType: artifact.config === 'oras' ? ORAS_CONFIG : EMPTY_CONFIG,
          digest: configDigest,
          size: configBytes.length,
        },
        layers: [
          {
            mediaType: artifact.layerMediaType ?? 'application/x-qemu-disk',
            digest: layerDigest,
            size: artifact.disk.length,
            annotations: { 'org.opencontainers.image.title': artifact.fileName ?? 'image.qcow2' },
          },
        ],
        annotations: { 'org.opencontainers.image.created': new Date().toISOString(), ...artifact.annotations },
      };
      const text = JSON.stringify(manifest);
      for (const tag of artifact.tags) await putManifest(repository, tag, text);
      return { manifestDigest: digestOf(Buffer.from(text)), layerDigest, layerSize: artifact.disk.length, manifest };
    },
    async tag(repository, manifestDigest, tag) {
      const { text } = await call('GET', `/v2/${repository}/manifests/${manifestDigest}`, repository, undefined, {
        accept: 'application/vnd.oci.image.manifest.v1+json',
      });
      await putManifest(repository, tag, text);
    },
    async deleteManifest(repository, manifestDigest) {
      await call('DELETE', `/v2/${repository}/manifests/${manifestDigest}`, repository);
    },
    async corruptBlob(digest, bytes) {
      const hex = digest.slice('sha256:'.length);
      await writeFile(path.join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data'), bytes);
    },
    log: () => output,
    async close() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await child;
      }
      if (tokenServer) await new Promise<void>((resolve) => tokenServer!.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface FrontAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface RegistryFront {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** Every request that reached the front: method, path and query, Authorization. */
  requests: Array<{ method: string; url: string; authorization?: string }>;
  close(): Promise<void>;
}

/**
 * A misbehaving registry for tests: a proxy in front of the real one on 127.0.0.1 that passes
 * every request through, except those `answer` answers itself (returning true), and lets
 * `rewrite` change the registry's answers (a Link header, a listing, a status).
 */
export async function registryFront(
  registryUrl: string,
  opts: {
    answer?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
    rewrite?: (req: http.IncomingMessage, answer: FrontAnswer) => FrontAnswer;
  } = {},
): Promise<RegistryFront> {
  const requests: RegistryFront['requests'] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? 'GET', url: req.url ?? '/', authorization: req.headers.authorization });
    if (opts.answer?.(req, res)) return;
    const headers = { ...req.headers };
    delete headers.host;
    request(new URL(req.url ?? '/', registryUrl), { method: req.method as 'GET', headers })
      .then(async (got) => {
        let answer: FrontAnswer = {
          status: got.statusCode,
          headers: got.headers,
          body: Buffer.from(await got.body.arrayBuffer()),
        };
        if (opts.rewrite) answer = opts.rewrite(req, answer);
        const out: Record<string, string | string[] | undefined> = {
          ...answer.headers,
          'content-length': String(answer.body.length),
        };
        delete out['transfer-encoding'];
        res.writeHead(answer.status, out as http.OutgoingHttpHeaders).end(answer.body);
      })
      .catch((err: Error) => res.writeHead(502).end(err.message));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
