/**
 * A registry project as a source of images, beside image lists: list its repositories (Harbor's
 * API v2.0 where the registry is Harbor, the distribution catalog otherwise), select each
 * repository's tags by pattern, read the manifests they name and turn each (repository, manifest)
 * into the event a list image would be. What a subscription's sync then plans and delivers is
 * the same as for a list (image-lists/sync-plan.ts).
 */
import type { Config } from '../core/config.js';
import { FetchError, InvalidInputError } from '../core/errors.js';
import { readBodyLimited } from '../core/http.js';
import type { Logger } from '../core/logging.js';
import type { ListedImage } from '../core/workflow-contract.js';
import { compareVersions } from '../image-lists/sync-plan.js';
import { registryImageToEvent } from './annotations.js';
import {
  MAX_REGISTRY_JSON_BYTES,
  nextLink,
  RegistryClient,
  resolveRegistryLogin,
  type RegistryLogin,
} from './client.js';
import { ACCEPTED_MANIFESTS, readDiskManifest, type DiskManifest } from './manifest.js';

/** EGI's central sync keeps the short tags (`22.04`, not `22.04-20250301-1a2b3c4`). */
export const DEFAULT_TAG_PATTERN = '^[^-]+$';

export type RegistryApi = 'auto' | 'harbor' | 'distribution';

export interface RegistrySource {
  /** Base URL of the registry (`https://registry.egi.eu`). */
  registry: string;
  /** The project (Harbor) or repository prefix (distribution) whose repositories are images. */
  project: string;
  /** Tags to take (a regular expression); DEFAULT_TAG_PATTERN when absent. */
  tags?: string;
  /** Name of a security.credentials entry, `user:password`. */
  credential?: string;
  /** Only these repositories (names inside the project). */
  repositories?: string[];
  vo?: string;
  api?: RegistryApi;
}

export interface ReadRegistryProject {
  /** `host/project`: the image list id of the project's images. */
  listId: string;
  images: ListedImage[];
  /** Tags that name nothing this service can register, with the reason. */
  invalid: Array<{ identifier?: string; problem: string }>;
  /**
   * Images (by image id, as the events name them) whose read failed this run: a repository or tag
   * that could not be listed or read. The sync keeps their images in the cloud, never expires them,
   * and reports them as unread.
   */
  unread: Array<{ imageId: string; problem: string }>;
}

/** `registry.egi.eu/egi_vm_images`: how a project is named as an image list. */
export function registryListId(registry: string, project: string): string {
  return `${new URL(registry).host}/${project.replace(/^\/+|\/+$/g, '')}`;
}

export function tagPattern(source: Pick<RegistrySource, 'tags'>): RegExp {
  const text = source.tags ?? DEFAULT_TAG_PATTERN;
  try {
    return new RegExp(text);
  } catch (err) {
    throw new InvalidInputError(`tag pattern '${text}' is not a regular expression: ${(err as Error).message}`);
  }
}

const PAGE = 100;

/** Follows `Link: <…>; rel="next"` from `first`, collecting what `take` finds on each page. */
async function paged<T>(
  client: RegistryClient,
  first: string,
  scope: string | undefined,
  take: (body: unknown) => T[],
): Promise<T[]> {
  const items: T[] = [];
  const seen = new Set<string>();
  for (let next: string | undefined = first; next && !seen.has(next);) {
    seen.add(next);
    const { body, response } = await client.getJson(next, { scope });
    items.push(...take(body));
    next = nextLink(response.headers.link, response.url);
  }
  return items;
}

function stringsAt(body: unknown, key: string, where: string): string[] {
  const value = (body as Record<string, unknown> | null)?.[key];
  if (value === null || value === undefined) return [];
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))
    throw new FetchError(`${where}: '${key}' is not a list of names`, { permanent: true });
  return value as string[];
}

/** Harbor answers its system information to anyone; the distribution server has no such path. */
async function isHarbor(client: RegistryClient): Promise<boolean> {
  try {
    const { body } = await client.getJson('api/v2.0/systeminfo');
    return typeof body === 'object' && body !== null && 'harbor_version' in body;
  } catch (err) {
    if (err instanceof FetchError && err.status === 404) return false;
    throw err;
  }
}

/** The repositories of a project, project prefix included (`egi_vm_images/ubuntu`), sorted. */
export async function listRepositories(
  client: RegistryClient,
  project: string,
  api: RegistryApi = 'auto',
): Promise<string[]> {
  const harbor = api === 'harbor' || (api === 'auto' && (await isHarbor(client)));
  let names: string[];
  if (harbor) {
    const first = `api/v2.0/projects/${encodeURIComponent(project)}/repositories?page_size=${PAGE}&page=1`;
    names = await paged(client, first, undefined, (body) => {
      if (!Array.isArray(body))
        throw new FetchError(`registry ${client.name}: the repositories of project ${project} are not a list`, {
          permanent: true,
        });
      return body.map((r) => String((r as { name?: unknown }).name ?? ''));
    });
  } else {
    const all = await paged(client, `v2/_catalog?n=${PAGE}`, 'registry:catalog:*', (body) =>
      stringsAt(body, 'repositories', `registry ${client.name} catalog`),
    );
    names = all;
  }
  return [...new Set(names.filter((n) => n.startsWith(`${project}/`)))].sort();
}

export async function listTags(client: RegistryClient, repository: string): Promise<string[]> {
  return paged(client, `v2/${repository}/tags/list?n=${PAGE}`, client.scopeFor(repository), (body) =>
    stringsAt(body, 'tags', `registry ${client.name} ${repository}`),
  );
}

/** Reads the manifest `reference` (tag or digest) names, checked as readDiskManifest checks it. */
export async function readManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
): Promise<DiskManifest> {
  const response = await client.get(`v2/${repository}/manifests/${reference}`, {
    accept: ACCEPTED_MANIFESTS,
    scope: client.scopeFor(repository),
  });
  const bytes = await readBodyLimited(response, MAX_REGISTRY_JSON_BYTES, `manifest ${repository}:${reference}`);
  const header = response.headers['docker-content-digest'];
  const contentType = response.headers['content-type'];
  return readDiskManifest(
    `registry ${client.name} ${repository}:${reference}`,
    bytes,
    Array.isArray(contentType) ? contentType[0] : contentType,
    reference,
    Array.isArray(header) ? header[0] : header,
  );
}

export interface ReadRegistryOptions {
  source: RegistrySource;
  config: Config;
  logger: Logger;
  /** The login, when the caller resolved it already; else the source's credential is resolved here. */
  login?: RegistryLogin;
  /** The images the subscription accepted last (a tag moved back to an older digest is refused). */
  previous?: ListedImage[];
}

/**
 * Reads what a registry project offers now. A repository's selected tags that name different
 * manifests make one image ambiguous: the newest tag (natural order) is taken and the others
 * reported. A manifest this service cannot read is reported and skipped; a refused login or an
 * unreachable registry fails the whole read (nothing would be known about the project).
 */
export async function readRegistryProject({
  source,
  config,
  logger,
  login,
}: ReadRegistryOptions): Promise<ReadRegistryProject> {
  const pattern = tagPattern(source);
  const resolvedLogin =
    login ?? (source.credential ? await resolveRegistryLogin(config, source.credential) : undefined);
  const client = new RegistryClient({
    registry: new URL(source.registry),
    login: resolvedLogin,
    security: config.security,
  });
  const listId = registryListId(source.registry, source.project);
  const images: ListedImage[] = [];
  const invalid: ReadRegistryProject['invalid'] = [];
  try {
    let repositories = await listRepositories(client, source.project, source.api);
    if (source.repositories)
      repositories = repositories.filter((r) => source.repositories!.includes(r.slice(source.project.length + 1)));
    for (const repository of repositories) {
      const tags = (await listTags(client, repository)).filter((t) => pattern.test(t)).sort(compareVersions);
      const byDigest = new Map<string, { tag: string; manifest: DiskManifest }>();
      for (const tag of tags) {
        try {
          const manifest = await readManifest(client, repository, tag);
          byDigest.set(manifest.digest, { tag, manifest }); // tags ascend: the newest tag naming a manifest wins
        } catch (err) {
          if (err instanceof InvalidInputError)
            invalid.push({ identifier: `${repository}:${tag}`, problem: err.message });
          else if (err instanceof FetchError && err.status === 404)
            invalid.push({
              identifier: `${repository}:${tag}`,
              problem: `the tag disappeared while reading (${err.message})`,
            });
          else throw err;
        }
      }
      const chosen = [...byDigest.values()].sort((a, b) => compareVersions(a.tag, b.tag));
      const newest = chosen.at(-1);
      if (!newest) continue;
      for (const other of chosen.slice(0, -1)) {
        invalid.push({
          identifier: `${repository}:${other.tag}`,
          problem: `tags ${other.tag} and ${newest.tag} of ${repository} name different manifests; one image per repository: ${newest.tag} is taken (narrow the tag pattern)`,
        });
      }
      const event = registryImageToEvent({
        listId,
        registry: client.registry,
        project: source.project,
        repository,
        tag: newest.tag,
        manifest: newest.manifest,
        vo: source.vo,
      });
      images.push({ event, expired: false });
    }
  } finally {
    await client.close();
  }
  logger.debug(
    { registry: client.name, project: source.project, images: images.length, invalid: invalid.length },
    'registry project read',
  );
  return { listId, images, invalid, unread: [] };
}
