/**
 * A registry project as a source of images, beside image lists: list its repositories (Harbor's
 * API v2.0 where the registry is Harbor, the distribution catalog otherwise), select each
 * repository's tags by pattern, read the manifests they name and turn each (repository, manifest)
 * into the event a list image would be. What a subscription's sync then plans and delivers is
 * the same as for a list (subscriptions/sync-plan.ts).
 */
import { compareVersions, type ImageEvent } from '../core/event.js';
import { registryListId, registrySubscriptionKey, type Config } from '../core/config.js';
import { FetchError, InvalidInputError } from '../core/errors.js';
import { readBodyLimited, redact } from '../core/http.js';
import type { Logger } from '../core/logging.js';
import type { ListedImage } from '../core/workflow-contract.js';
import { blobUrl, CREATED, REF_DIGEST, registryImageToEvent, shortName } from './annotations.js';
import {
  MAX_REGISTRY_JSON_BYTES,
  nextLink,
  registryAccess,
  RegistryClient,
  resolveRegistryLogin,
  type RegistryLogin,
  type RegistryRequestCounts,
} from './client.js';
import { ACCEPTED_MANIFESTS, readDiskManifest, type DiskManifest } from './manifest.js';
import {
  acceptedManifestOf,
  AcceptedImages,
  encodeAcceptedImages,
  encodeTags,
  projectValidator,
  RememberedTags,
  type AcceptedManifest,
  type RegistryMemory,
  type RememberedManifests,
} from './remembered.js';

/** EGI's central sync keeps the short tags (`22.04`, not `22.04-20250301-1a2b3c4`). */
const DEFAULT_TAG_PATTERN = '^[^-]+$';

type RegistryApi = 'auto' | 'harbor' | 'distribution';

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
  /** The registry's token service when not on its own origin (the only other host the login goes to). */
  tokenRealm?: string;
  /** Tests only: plain http may carry the login to a registry on 127.0.0.1. */
  plainHttpOnLoopback?: boolean;
  /** Most pages one listing may take (DEFAULT_MAX_PAGES). */
  maxPages?: number;
  /** Most names one listing may give (DEFAULT_MAX_ITEMS). */
  maxItems?: number;
}

/** A listing (the catalog, a repository's tags) stops with an error past this many pages… */
const DEFAULT_MAX_PAGES = 1000;
/** …or this many names. */
const DEFAULT_MAX_ITEMS = 100_000;

/** How far a listing may go, and what stops it early. */
interface ListingBounds {
  maxPages: number;
  maxItems: number;
  signal?: AbortSignal;
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
  /** The digest of every selected tag read now (for the next run's conditional reads). */
  manifests?: RememberedManifests;
  /** What the read asked of the registry (RegistryClient.requests). */
  requests?: RegistryRequestCounts;
  /** The same in the copy's bounded form, with what the next read needs of each image accepted (oci/remembered.ts). */
  memory?: RegistryMemory;
  /**
   * A digest of what makes the images (every selected tag and its manifest, the registry, the VO),
   * when the read had nothing to report (no invalid tag, nothing unread): the next read given it
   * finds out without reading a manifest whole that nothing changed.
   */
  validator?: string;
  /** The validator given was still right: no image was made (`images` is empty); those accepted last stand. */
  notModified?: true;
}

function tagPattern(source: Pick<RegistrySource, 'tags'>): RegExp {
  const text = source.tags ?? DEFAULT_TAG_PATTERN;
  try {
    return new RegExp(text);
  } catch (err) {
    throw new InvalidInputError(`tag pattern '${text}' is not a regular expression: ${(err as Error).message}`);
  }
}

const PAGE = 100;

/**
 * Follows `Link: <…>; rel="next"` from `first`, collecting what `take` finds on each page: on the
 * registry's own origin only (a link elsewhere fails the listing, it is never followed), at most
 * `maxPages` pages and `maxItems` names (more fails the listing, so a registry that never stops
 * paging cannot hold the worker), stopped by the signal.
 */
async function paged<T>(
  client: RegistryClient,
  first: string,
  scope: string | undefined,
  take: (body: unknown) => T[],
  what: string,
  bounds: ListingBounds,
): Promise<T[]> {
  const items: T[] = [];
  const seen = new Set<string>();
  let pages = 0;
  for (let next: string | URL | undefined = first; next !== undefined;) {
    bounds.signal?.throwIfAborted();
    const url = client.resolve(next);
    if (seen.has(url.href)) break;
    if (pages >= bounds.maxPages)
      throw new FetchError(
        `registry ${client.name}: ${what} goes on past ${bounds.maxPages} pages (maxPages); the listing was stopped, nothing of it is used`,
        { permanent: true },
      );
    seen.add(url.href);
    pages++;
    const { body, response } = await client.getJson(url, { scope, signal: bounds.signal });
    items.push(...take(body));
    if (items.length > bounds.maxItems)
      throw new FetchError(
        `registry ${client.name}: ${what} has more than ${bounds.maxItems} names (maxItems); the listing was stopped, nothing of it is used`,
        { permanent: true },
      );
    const link = nextLink(response.headers.link, response.url);
    if (link && link.origin !== client.registry.origin)
      throw new FetchError(
        `registry ${client.name}: ${what}: the next page's Link names ${redact(link)}, not the registry (${client.registry.origin}); not followed`,
        { permanent: true },
      );
    next = link;
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
async function isHarbor(client: RegistryClient, signal?: AbortSignal): Promise<boolean> {
  try {
    const { body } = await client.getJson('api/v2.0/systeminfo', { signal });
    return typeof body === 'object' && body !== null && 'harbor_version' in body;
  } catch (err) {
    if (err instanceof FetchError && err.status === 404) return false;
    throw err;
  }
}

const UNBOUNDED: ListingBounds = { maxPages: DEFAULT_MAX_PAGES, maxItems: DEFAULT_MAX_ITEMS };

/** The repositories of a project, project prefix included (`egi_vm_images/ubuntu`), sorted. */
export async function listRepositories(
  client: RegistryClient,
  project: string,
  api: RegistryApi = 'auto',
  bounds: ListingBounds = UNBOUNDED,
): Promise<string[]> {
  const harbor = api === 'harbor' || (api === 'auto' && (await isHarbor(client, bounds.signal)));
  let names: string[];
  if (harbor) {
    const first = `api/v2.0/projects/${encodeURIComponent(project)}/repositories?page_size=${PAGE}&page=1`;
    names = await paged(
      client,
      first,
      undefined,
      (body) => {
        if (!Array.isArray(body))
          throw new FetchError(`registry ${client.name}: the repositories of project ${project} are not a list`, {
            permanent: true,
          });
        return body.map((r) => String((r as { name?: unknown }).name ?? ''));
      },
      `the repositories of project ${project}`,
      bounds,
    );
  } else {
    names = await paged(
      client,
      `v2/_catalog?n=${PAGE}`,
      'registry:catalog:*',
      (body) => stringsAt(body, 'repositories', `registry ${client.name} catalog`),
      'the catalog',
      bounds,
    );
  }
  return [...new Set(names.filter((n) => n.startsWith(`${project}/`)))].sort();
}

export async function listTags(
  client: RegistryClient,
  repository: string,
  bounds: ListingBounds = UNBOUNDED,
): Promise<string[]> {
  return paged(
    client,
    `v2/${repository}/tags/list?n=${PAGE}`,
    client.scopeFor(repository),
    (body) => stringsAt(body, 'tags', `registry ${client.name} ${repository}`),
    `the tags of ${repository}`,
    bounds,
  );
}

/** Reads the manifest `reference` (tag or digest) names, checked as readDiskManifest checks it. */
export async function readManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  signal?: AbortSignal,
): Promise<DiskManifest> {
  const read = await fetchManifest(client, repository, reference, undefined, signal);
  if (read === NOT_MODIFIED) throw new Error(`${repository}:${reference}: 304 to an unconditional request`);
  return read;
}

const NOT_MODIFIED = Symbol('not modified');

/**
 * Reads the manifest a tag names unless it is still `known` (the digest read last time): one
 * conditional GET (`If-None-Match: "<digest>"`, which the distribution server and Harbor answer
 * 304 Not Modified while the tag names that manifest). A registry that ignores the header
 * answers the manifest whole, read and checked as readManifest reads it.
 */
export async function readManifestIfChanged(
  client: RegistryClient,
  repository: string,
  tag: string,
  known: string,
  signal?: AbortSignal,
): Promise<DiskManifest | { notModified: true; digest: string }> {
  const read = await fetchManifest(client, repository, tag, known, signal);
  if (read !== NOT_MODIFIED) return read;
  return { notModified: true, digest: known };
}

async function fetchManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  known: string | undefined,
  signal: AbortSignal | undefined,
): Promise<DiskManifest | typeof NOT_MODIFIED> {
  const response = await client.get(`v2/${repository}/manifests/${reference}`, {
    accept: ACCEPTED_MANIFESTS,
    scope: client.scopeFor(repository),
    headers: known ? { 'if-none-match': `"${known}"` } : undefined,
    signal,
  });
  const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);
  const header = first(response.headers['docker-content-digest']);
  if (response.status === 304) {
    await response.body.dump().catch(() => undefined);
    // Not modified is believed only for what was asked: the digest sent, and (when the registry names one) the same.
    if (known && (!header || header === known)) return NOT_MODIFIED;
    return fetchManifest(client, repository, reference, undefined, signal);
  }
  const bytes = await readBodyLimited(response, MAX_REGISTRY_JSON_BYTES, `manifest ${repository}:${reference}`);
  return readDiskManifest(
    `registry ${client.name} ${repository}:${reference}`,
    bytes,
    first(response.headers['content-type']),
    reference,
    header,
  );
}

/**
 * The digest each selected tag named when it was read last, per image (repository name inside
 * the project): `{ ubuntu: { '22.04': 'sha256:…' } }`. Kept for the next run's conditional reads
 * (in the copy, as oci/remembered.ts encodes it); bounded by MAX_REMEMBERED_TAGS (a tag past it
 * is read whole).
 */
export type { RememberedManifests } from './remembered.js';

/** At most this many tags' digests are remembered between runs (53 bytes each in the run's result). */
const MAX_REMEMBERED_TAGS = 2000;

interface ReadRegistryOptions {
  source: RegistrySource;
  config: Config;
  logger: Logger;
  /** The login, when the caller resolved it already; else the source's credential is resolved here. */
  login?: RegistryLogin;
  /** The images the subscription accepted last, when its copy carries them (a tag moved back to an older digest is refused). */
  previous?: ListedImage[];
  /** The digests the selected tags named at the last read: each is read again only if it changed. */
  manifests?: RememberedManifests;
  /**
   * What the last read remembered in the copy's bounded form (oci/remembered.ts): the tags'
   * digests, and of each image accepted what tells a later manifest older and where to read it
   * back, for a copy that no longer carries the images (`previous`).
   */
  memory?: Partial<RegistryMemory>;
  /**
   * The project's validator at the last read (ReadRegistryProject.validator). When this read finds
   * the same, it says so (`notModified`) and makes no image: the images accepted last still stand.
   */
  validator?: string;
  /** Stops the read (the activity's cancellation: cancelled, timed out, worker shutting down). */
  signal?: AbortSignal;
}

/** One repository as the first pass of a read leaves it: each manifest its selected tags name, and what failed. */
interface RepositoryRead {
  repository: string;
  imageId: string;
  /** Each manifest the selected tags name (the newest tag naming it); unread when the registry said it did not change. */
  byDigest: Map<string, { tag: string; digest: string; manifest?: DiskManifest }>;
  /** Tags whose manifest could not be read (a failed answer, the tag gone meanwhile), newest last. */
  failed: Array<{ tag: string; problem: string }>;
  /** Tags refused (not a tag name, a manifest that cannot be registered). */
  refused: number;
}

/** A repository name as the distribution spec writes them (lower-case components separated by `/`). */
const REPOSITORY_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
/** A tag as the distribution spec writes them: nothing that could be read as a path. */
const TAG_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/**
 * Whether a read failure is the whole registry's (the run fails: a refused login, a cancelled
 * read, a configuration error) rather than one repository's or tag's (kept as unread).
 */
function failsTheRead(err: unknown, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted) return true;
  if (!(err instanceof FetchError)) return !(err instanceof InvalidInputError);
  return err.status === 401 || err.status === 403;
}

/** The problem of an error, for `invalid` and `unread` (its message). */
function problemOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The site's settings for the project: its configuration entry wins over the source's own. */
function siteSettings(config: Config, source: RegistrySource): RegistrySource {
  const key = registrySubscriptionKey(source);
  const configured = config.registrySubscriptions.find((sub) => registrySubscriptionKey(sub) === key);
  return {
    ...source,
    tokenRealm: configured?.tokenRealm ?? source.tokenRealm,
    plainHttpOnLoopback: configured?.plainHttpOnLoopback ?? source.plainHttpOnLoopback,
    maxPages: configured?.maxPages ?? source.maxPages,
    maxItems: configured?.maxItems ?? source.maxItems,
  };
}

function createdAt(annotations: Record<string, string> | undefined): number | undefined {
  const text = annotations?.[CREATED];
  const time = text ? Date.parse(text) : NaN;
  return Number.isFinite(time) ? time : undefined;
}

/**
 * Why the image `tag` (its manifest) would be older than the one the subscription accepted last,
 * or undefined when it is not: its tag sorts before the accepted one's (natural order, as tags
 * are chosen), or it is the same tag on another disk whose manifest was created
 * (`org.opencontainers.image.created`) before the accepted one. A manifest without a creation
 * time is not called older: nothing says it is.
 */
export function rollback(
  tag: string,
  manifest: DiskManifest,
  accepted: Pick<ImageEvent, 'version' | 'checksumSha256' | 'properties'>,
): string | undefined {
  if (!accepted.version) return undefined;
  const order = compareVersions(tag, accepted.version);
  if (order < 0) return `tag ${tag} is older than ${accepted.version}, the tag registered last`;
  if (order > 0 || manifest.disk.digest === `sha256:${accepted.checksumSha256 ?? ''}`) return undefined;
  const now = createdAt(manifest.annotations);
  const before = createdAt(accepted.properties);
  if (now !== undefined && before !== undefined && now < before)
    return `tag ${tag} moved back to a manifest created ${manifest.annotations[CREATED]}, before the one registered last (${accepted.properties?.[CREATED]})`;
  return undefined;
}

/**
 * Reads what a registry project offers now. The list id is the configuration's (host and
 * project) and every image id a repository's name inside the project: nothing a manifest says
 * changes them. A repository's selected tags that name different manifests make one image
 * ambiguous: the newest tag (natural order) is taken and the others reported in `invalid`, as is
 * a tag whose manifest is read but cannot be registered. A repository or tag whose read failed
 * (an error answer, a tag gone while reading, a listing past its bounds) is reported in `unread`
 * and its image kept, never expired for it: so is a repository whose newest tags could not be
 * read, or none of whose tags was registrable. A tag moved back to an older image than the one
 * accepted last is refused (`invalid`) and the accepted image stays the current one. A refused
 * login, a cancelled read or a project that cannot be listed fails the whole read.
 *
 * Two passes: every repository's tags and the manifests they name (conditional requests where a
 * digest is remembered), then the images. Between them, a read given the last read's validator
 * that finds every selected tag naming the same manifest as then stops: `notModified`, no image
 * made (nothing was read whole). Without the accepted images' events (a copy that carries only
 * `memory`), an image whose manifest did not change is made again from its manifest read whole,
 * and an accepted image that must stay current is read back by its digest.
 */
export async function readRegistryProject({
  source: given,
  config,
  logger,
  login,
  previous,
  manifests: remembered,
  memory,
  validator: lastValidator,
  signal,
}: ReadRegistryOptions): Promise<ReadRegistryProject> {
  const source = siteSettings(config, given);
  const pattern = tagPattern(source);
  const resolvedLogin =
    login ?? (source.credential ? await resolveRegistryLogin(config, source.credential) : undefined);
  const registry = new URL(source.registry);
  const access = registryAccess(config, registry);
  const client = new RegistryClient({
    registry,
    login: resolvedLogin,
    security: config.security,
    tokenRealms: [...(access.tokenRealms ?? []), ...(source.tokenRealm ? [source.tokenRealm] : [])],
    plainHttpOnLoopback: source.plainHttpOnLoopback ?? access.plainHttpOnLoopback,
  });
  const bounds: ListingBounds = {
    maxPages: source.maxPages ?? DEFAULT_MAX_PAGES,
    maxItems: source.maxItems ?? DEFAULT_MAX_ITEMS,
    signal,
  };
  const listId = registryListId(source.registry, source.project);
  const accepted = new Map(
    (previous ?? [])
      .filter((p) => !p.expired && p.event.imageListId === listId && p.event.imageId)
      .map((p) => [p.event.imageId!, p]),
  );
  const rememberedTags = new RememberedTags(memory?.tags);
  const acceptedManifests = new AcceptedImages(memory?.images);
  const images: ListedImage[] = [];
  const invalid: ReadRegistryProject['invalid'] = [];
  const unread: ReadRegistryProject['unread'] = [];
  // Names come from the registry: kept in maps, made an object (own properties only) at the end.
  const manifests = new Map<string, Map<string, string>>();
  let tagsRemembered = 0;
  let allRemembered = true;
  const remember = (imageId: string, tag: string, digest: string) => {
    const tags = manifests.get(imageId) ?? new Map<string, string>();
    if (!tags.has(tag) && tagsRemembered >= MAX_REMEMBERED_TAGS) {
      allRemembered = false;
      return;
    }
    if (!tags.has(tag)) tagsRemembered++;
    manifests.set(imageId, tags.set(tag, digest));
  };
  const rememberedNow = (): RememberedManifests =>
    Object.fromEntries([...manifests].map(([imageId, tags]) => [imageId, Object.fromEntries(tags)]));
  const validatorOf = (now: RememberedManifests) =>
    projectValidator({ listId, registry: client.registry.href, vo: source.vo }, now);
  /**
   * The event accepted last for the image, when it was made from this very manifest of this tag,
   * in this repository of this registry, for this VO: what reading the manifest again would make.
   */
  const unchangedEvent = (imageId: string, repository: string, tag: string, digest: string) => {
    const event = accepted.get(imageId)?.event;
    if (!event?.checksumSha256 || event.version !== tag || event.properties?.[REF_DIGEST] !== digest) return undefined;
    if (event.vo !== source.vo) return undefined;
    if (event.uri !== blobUrl(client.registry, repository, `sha256:${event.checksumSha256}`)) return undefined;
    return event;
  };
  const eventOf = (repository: string, tag: string, manifest: DiskManifest) =>
    registryImageToEvent({
      listId,
      registry: client.registry,
      project: source.project,
      repository,
      tag,
      manifest,
      vo: source.vo,
    });
  /**
   * The image accepted last, read back by its manifest's digest (a copy without the events): the
   * event it was, or why it could not be read (a failure of the whole read is thrown).
   */
  const readBack = async (
    repository: string,
    was: AcceptedManifest,
  ): Promise<{ event: ImageEvent } | { problem: string }> => {
    try {
      return { event: eventOf(repository, was.version, await readManifest(client, repository, was.manifest, signal)) };
    } catch (err) {
      if (failsTheRead(err, signal)) throw err;
      return {
        problem: `the image registered last (${repository}@${was.manifest}) could not be read back: ${problemOf(err)}`,
      };
    }
  };
  /** The image accepted last: its event when the copy carries the images, else what the copy remembers of it. */
  const acceptedBefore = (imageId: string): { event: ImageEvent } | { was: AcceptedManifest } | undefined => {
    const event = accepted.get(imageId)?.event;
    if (event) return { event };
    const was = acceptedManifests.of(imageId);
    return was ? { was } : undefined;
  };
  /** Images read back already (a tag moved back), so that a failure is not asked twice. */
  const readBackTried = new Set<string>();
  try {
    let repositories = await listRepositories(client, source.project, source.api, bounds);
    if (source.repositories)
      repositories = repositories.filter((r) => source.repositories!.includes(shortName(r, source.project)));
    // First pass: what every selected tag names now.
    const read: RepositoryRead[] = [];
    for (const repository of repositories) {
      const imageId = shortName(repository, source.project);
      if (!REPOSITORY_NAME.test(repository)) {
        invalid.push({ identifier: repository, problem: `'${repository}' is not a repository name; skipped` });
        continue;
      }
      let tags: string[];
      try {
        tags = (await listTags(client, repository, bounds)).filter((t) => pattern.test(t)).sort(compareVersions);
      } catch (err) {
        if (failsTheRead(err, signal)) throw err;
        unread.push({ imageId, problem: `the tags of ${repository} could not be read: ${problemOf(err)}` });
        continue;
      }
      const repo: RepositoryRead = { repository, imageId, byDigest: new Map(), failed: [], refused: 0 };
      read.push(repo);
      for (const tag of tags) {
        if (!TAG_NAME.test(tag)) {
          invalid.push({ identifier: `${repository}:${tag}`, problem: `'${tag}' is not a tag name; skipped` });
          repo.refused++;
          continue;
        }
        try {
          // A tag read last time costs one conditional request while it names the same manifest.
          const known = rememberedDigest(remembered, imageId, tag) ?? rememberedTags.digestOf(imageId, tag);
          const manifest = known
            ? await readManifestIfChanged(client, repository, tag, known, signal)
            : await readManifest(client, repository, tag, signal);
          // tags ascend: the newest tag naming a manifest wins
          repo.byDigest.set(manifest.digest, {
            tag,
            digest: manifest.digest,
            manifest: 'notModified' in manifest ? undefined : manifest,
          });
          remember(imageId, tag, manifest.digest);
        } catch (err) {
          refuse(repo, tag, err);
        }
      }
    }
    if (
      lastValidator !== undefined &&
      allRemembered &&
      invalid.length === 0 &&
      unread.length === 0 &&
      read.every((r) => r.failed.length === 0 && r.refused === 0)
    ) {
      const now = rememberedNow();
      // Every selected tag names the manifest it named when the images accepted last were made of them.
      if (validatorOf(now) === lastValidator) {
        logger.debug({ registry: client.name, project: source.project }, 'registry project not modified');
        return {
          listId,
          images: [],
          invalid,
          unread,
          manifests: now,
          requests: { ...client.requests },
          notModified: true,
          validator: lastValidator,
        };
      }
    }
    // Second pass: each repository's image.
    for (const repo of read) {
      const { repository, imageId, byDigest, failed } = repo;
      const chosen = [...byDigest.values()].sort((a, b) => compareVersions(a.tag, b.tag));
      let newest = chosen.at(-1);
      if (newest && !newest.manifest) {
        // Not modified: the image accepted last is it, when it was made from this manifest; else it is read whole.
        const event = unchangedEvent(imageId, repository, newest.tag, newest.digest);
        if (event && failed.every((f) => compareVersions(f.tag, newest!.tag) <= 0)) {
          for (const other of chosen.slice(0, -1)) invalid.push(ambiguous(repository, other.tag, newest.tag));
          images.push({ event, expired: false });
          continue;
        }
        try {
          const manifest = await readManifest(client, repository, newest.tag, signal);
          newest = { tag: newest.tag, digest: manifest.digest, manifest };
          remember(imageId, newest.tag, manifest.digest);
        } catch (err) {
          refuse(repo, newest.tag, err);
          chosen.pop();
          newest = chosen.filter((c) => c.manifest).at(-1);
        }
      }
      const newerFailed = failed.filter((f) => !newest || compareVersions(f.tag, newest.tag) > 0);
      if (newerFailed.length > 0) {
        // The newest tags could not be read: what the repository offers now is not known.
        unread.push({
          imageId,
          problem: newerFailed.map((f) => `${repository}:${f.tag}: ${f.problem}`).join('; '),
        });
        continue;
      }
      if (!newest?.manifest) {
        // No tag selected: the repository has no image now. Tags that were all refused: kept.
        if (repo.refused > 0)
          unread.push({
            imageId,
            problem: `none of the ${repo.refused} selected tags of ${repository} can be registered (see invalid); its image is kept`,
          });
        continue;
      }
      for (const other of chosen.filter((c) => c !== newest && compareVersions(c.tag, newest!.tag) < 0))
        invalid.push(ambiguous(repository, other.tag, newest.tag));
      const before = acceptedBefore(imageId);
      const older =
        before && rollback(newest.tag, newest.manifest, 'event' in before ? before.event : asEvent(before.was));
      if (before && older) {
        invalid.push({
          identifier: `${repository}:${newest.tag}`,
          problem: `${older}: refused, as an older hv:version is; the image registered last stays current`,
        });
        readBackTried.add(imageId);
        const kept = 'event' in before ? before : await readBack(repository, before.was);
        if ('event' in kept) images.push({ event: kept.event, expired: false });
        else unread.push({ imageId, problem: `${older}, and ${kept.problem}` });
        continue;
      }
      images.push({ event: eventOf(repository, newest.tag, newest.manifest), expired: false });
    }
    // An image whose read failed stays as it was accepted; without its event in the copy, it is read back.
    for (const { imageId } of unread) {
      const before = readBackTried.has(imageId) ? undefined : acceptedBefore(imageId);
      if (!before || 'event' in before) continue;
      const kept = await readBack(`${source.project}/${imageId}`, before.was);
      if ('event' in kept) images.push({ event: kept.event, expired: false });
    }
  } finally {
    await client.close();
  }
  logger.debug(
    {
      registry: client.name,
      project: source.project,
      images: images.length,
      invalid: invalid.length,
      unread: unread.length,
    },
    'registry project read',
  );
  const now = rememberedNow();
  // What the next read needs of each image accepted now, and of each kept unread as it was accepted.
  const carried = new Map<string, AcceptedManifest>();
  for (const { event } of images) {
    const was = acceptedManifestOf(event);
    if (was && event.imageId) carried.set(event.imageId, was);
  }
  for (const { imageId } of unread) {
    const before = carried.has(imageId) ? undefined : acceptedBefore(imageId);
    const was = before && ('event' in before ? acceptedManifestOf(before.event) : before.was);
    if (was) carried.set(imageId, was);
  }
  const result: ReadRegistryProject = {
    listId,
    images,
    invalid,
    unread,
    manifests: now,
    requests: { ...client.requests },
    memory: { tags: encodeTags(now), images: encodeAcceptedImages(carried) },
  };
  // Only a read with nothing to report can be found the same again: a problem is looked at anew every run.
  if (allRemembered && invalid.length === 0 && unread.length === 0) result.validator = validatorOf(now);
  return result;

  /** A tag whose manifest was not taken: read and not registrable (invalid), or not read (failed). */
  function refuse(repo: RepositoryRead, tag: string, err: unknown): void {
    if (err instanceof InvalidInputError) {
      // Read, and not registrable: reported; the tag is not an image.
      invalid.push({ identifier: `${repo.repository}:${tag}`, problem: err.message });
      repo.refused++;
    } else if (failsTheRead(err, signal)) throw err;
    else {
      const gone = err instanceof FetchError && err.status === 404 ? 'the tag disappeared while reading: ' : '';
      repo.failed.push({ tag, problem: `${gone}${problemOf(err)}` });
    }
  }
}

/** What rollback reads of an image accepted last, from what the copy remembers of it. */
function asEvent(was: AcceptedManifest): Pick<ImageEvent, 'version' | 'checksumSha256' | 'properties'> {
  return {
    version: was.version,
    checksumSha256: was.checksumSha256,
    properties: was.created !== undefined ? { [CREATED]: was.created } : {},
  };
}

/** The digest a tag named at the last read, if it was remembered (a valid sha256 digest, nothing else). */
function rememberedDigest(
  remembered: RememberedManifests | undefined,
  imageId: string,
  tag: string,
): string | undefined {
  const tags = remembered && Object.hasOwn(remembered, imageId) ? remembered[imageId] : undefined;
  const digest = tags && Object.hasOwn(tags, tag) ? tags[tag] : undefined;
  return typeof digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(digest) ? digest : undefined;
}

function ambiguous(repository: string, tag: string, newest: string): { identifier: string; problem: string } {
  return {
    identifier: `${repository}:${tag}`,
    problem: `tags ${tag} and ${newest} of ${repository} name different manifests; one image per repository: ${newest} is taken (narrow the tag pattern)`,
  };
}
