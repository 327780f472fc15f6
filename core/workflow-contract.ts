/**
 * What the workflows, their starters (bridge, CLI) and the worker agree on: names, inputs,
 * ids and search attributes. Workflow code imports this, so it must stay free of Node
 * built-ins and I/O (only @temporalio/common, which is workflow-safe, and types).
 */
import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';
import type { ImageEvent } from './event.js';

export const REGISTER_WORKFLOW = 'registerImage';
export const EXPIRE_WORKFLOW = 'expireImage';
/**
 * One per image revision and target: every event for the revision reaches it (signal-with-start),
 * and it runs registerImage or expireImage as children, one at a time, so the final state
 * follows the last event whatever the order in which the work gets done.
 */
export const IMAGE_REVISION_WORKFLOW = 'imageRevision';
export const IMAGE_EVENT_SIGNAL = 'imageEvent';
export const CURRENT_QUERY = 'current';

/** The original handlers (`-handler`), by the names a site may have in its scripts. */
export const HANDLERS = ['registerImage', 'JustLogHandler', 'ThrowingHandler'] as const;
export type HandlerName = (typeof HANDLERS)[number];

/** Per-event choices. Names only: a credential is resolved by the worker from its own config. */
export interface RegistrationOptions {
  handler?: HandlerName;
  /**
   * The cloud to register into, where the site's cloud lets an event choose one (Synnefo: a kamaki
   * cloud of ~/.kamakirc); the worker's configured cloud when absent. Read with chosenCloud().
   */
  cloud?: string;
  /** What `cloud` was called in messages and histories written before: read as `cloud`. */
  kamakiCloud?: string;
  /** Disable TLS verification for this image's download (logged when used). */
  insecureSsl?: boolean;
  osfamily?: string;
  users?: string;
  /** Format hint (`-format`), used only when the content cannot tell. */
  formatHint?: string;
  /** Name of a credential in the worker's `security.credentials` to send with the download. */
  credentialName?: string;
}

/**
 * What every workflow and every cloud step of one image is given: the event and its options.
 * The input of registerImage and expireImage, and of finding or expiring the image on the cloud.
 */
export interface ImageRequest {
  event: ImageEvent;
  options: RegistrationOptions;
}

/** The cloud the options name: `cloud`, or `kamakiCloud` in options recorded before it was renamed. */
export function chosenCloud(options: Pick<RegistrationOptions, 'cloud' | 'kamakiCloud'>): string | undefined {
  return options.cloud ?? options.kamakiCloud;
}

/** The disk formats a cloud can be given: what convertToRaw writes or keeps. */
export type DiskFormat = 'raw' | 'qcow2';

/**
 * What convertToRaw makes of a disk in `format` for a cloud that takes `formats`: the disk as it is
 * when the cloud takes its format, else raw when the cloud takes raw, else the cloud's first format.
 */
export function convertedFormat(format: string, formats: readonly DiskFormat[]): DiskFormat {
  return formats.find((f) => f === format) ?? (formats.includes('raw') ? 'raw' : formats[0]);
}

/** What an event asks of an image revision. */
export type RevisionAction = 'register' | 'expire';

/** The signal an imageRevision workflow receives for every event of its revision. */
export interface ImageEventSignal extends ImageRequest {
  action: RevisionAction;
  /** registrationTarget(): part of every id, so the children of one revision agree on theirs. */
  target: string;
}

/** The child an imageRevision workflow runs now (or ran last), for following it. */
export interface CurrentChild {
  action: RevisionAction;
  workflowId: string;
  runId?: string;
}

export interface ImageRevisionResult {
  /** The action of the last event, which the cloud now reflects. */
  action: RevisionAction;
  register?: RegisterImageResult;
  expire?: ExpireImageResult;
}

export interface RegisterImageResult {
  handler: HandlerName;
  /** Synnefo image id, when the handler registers. */
  imageId?: string;
  /** True when an image with the same identity already existed and was reused. */
  reused?: boolean;
  name?: string;
  location?: string;
  format?: string;
  properties?: Record<string, string>;
}

/** What an expiry did: the images it made private or unregistered (none found is success). */
export interface ExpireImageResult {
  action: 'make-private' | 'unregister';
  imageIds: string[];
}

/** Failure types the workflow acts on: wait for disk space, or give up on this host's disk. */
export const OUT_OF_SPACE = 'OutOfSpaceError';
export const DISK_TOO_SMALL = 'DiskTooSmallError';
export interface OutOfSpaceDetails {
  neededBytes: number;
  freeBytes: number;
}

/** The stages a registration goes through, shown as the `ImageStage` search attribute. */
export const STAGES = [
  'queued',
  /** Holding its place in the host's queue: the host is alive and busy with other images. */
  'waiting-for-host',
  /** The host's working folder has not enough free space for the next step yet. */
  'waiting-for-disk',
  'acquiring',
  'inspecting',
  'converting',
  'preparing',
  'registering',
  'expiring',
  'done',
  'failed',
] as const;
export type Stage = (typeof STAGES)[number];

/** Progress, readable with the `progress` query while the workflow runs. */
export interface Progress {
  stage: Stage;
  step?: string;
  bytesDone?: number;
  bytesTotal?: number;
}
export const PROGRESS_QUERY = 'progress';

export const SA_IMAGE_ID = defineSearchAttributeKey('ImageIdentifier', SearchAttributeType.KEYWORD);
export const SA_IMAGE_LIST_ID = defineSearchAttributeKey('ImageListIdentifier', SearchAttributeType.KEYWORD);
export const SA_VO = defineSearchAttributeKey('ImageVO', SearchAttributeType.KEYWORD);
export const SA_STAGE = defineSearchAttributeKey('ImageStage', SearchAttributeType.KEYWORD);
/** The image's `dc:title`: the Web UI (2.42) shows no summary column, but a search attribute column. */
export const SA_IMAGE_TITLE = defineSearchAttributeKey('ImageTitle', SearchAttributeType.KEYWORD);

/** The registration's target (`<type>-<name>`, registrationTarget): `registrations --cloud` and the Web UI filter on it. */
export const SA_CLOUD = defineSearchAttributeKey('ImageCloud', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTE_KEYS = [SA_IMAGE_ID, SA_IMAGE_LIST_ID, SA_VO, SA_STAGE, SA_IMAGE_TITLE, SA_CLOUD];

/** What the workflows of one image carry as search attributes, at `stage`, on `target` (absent in children started before it was set). */
export function imageSearchAttributes(
  event: ImageEvent,
  stage: Stage | 'delegated',
  target?: string,
): SearchAttributePair[] {
  const pairs: SearchAttributePair[] = [{ key: SA_STAGE, value: stage }];
  if (target) pairs.push({ key: SA_CLOUD, value: target });
  if (event.imageId) pairs.push({ key: SA_IMAGE_ID, value: event.imageId });
  if (event.imageListId) pairs.push({ key: SA_IMAGE_LIST_ID, value: event.imageListId });
  if (event.vo) pairs.push({ key: SA_VO, value: event.vo });
  if (event.title) pairs.push({ key: SA_IMAGE_TITLE, value: event.title.slice(0, 200) });
  return pairs;
}

const ACTION_VERB: Record<RevisionAction | 'revision', string> = {
  register: 'Register',
  expire: 'Expire',
  revision: 'Image',
};

/** One line naming the image, for Temporal's static summary of its workflows (the Web UI's User Metadata). */
export function imageSummary(what: RevisionAction | 'revision', event: ImageEvent, target: string): string {
  const name = event.title ?? event.imageId ?? event.filename ?? 'an image';
  const version = event.version ? ` ${event.version}` : '';
  const list = event.imageListId ? ` of ${event.imageListId}` : '';
  return `${ACTION_VERB[what]} ${name}${version}${list} on ${target}`;
}

/** The image's identity in markdown, for Temporal's static details: title, list, VO, revision, target, source. */
export function imageDetails(event: ImageEvent, target: string, options: RegistrationOptions): string {
  const rows: Array<[string, string | undefined]> = [
    ['Title', event.title],
    ['Image', event.imageId],
    ['Image list', event.imageListId],
    ['VO', event.vo],
    [
      'Revision',
      [
        event.version && `version ${event.version}`,
        event.checksumSha512 && `sha512 ${event.checksumSha512.slice(0, 16)}…`,
      ]
        .filter(Boolean)
        .join(', '),
    ],
    ['Target', target],
    ['Source', event.uri ?? event.filename],
    ['Event', `${event.type ?? ''} from ${event.origin}`.trim()],
    ['Handler', options.handler],
  ];
  return rows
    .filter(([, value]) => value)
    .map(([key, value]) => `- **${key}**: ${value!.replace(/\s+/g, ' ')}`)
    .join('\n');
}

/** Name → type, for `temporal operator search-attribute create` and the dev server flags. */
export const SEARCH_ATTRIBUTES: ReadonlyArray<{ name: string; type: 'Keyword' }> = SEARCH_ATTRIBUTE_KEYS.map((key) => ({
  name: key.name,
  type: 'Keyword' as const,
}));

const MAX_PART = 80;
function idPart(value: string | undefined, fallback: string): string {
  const cleaned = (value ?? '').trim().replace(/[^A-Za-z0-9._-]+/g, '_');
  return (cleaned || fallback).slice(0, MAX_PART);
}

/** A short, stable digest of a string (FNV-1a 64-bit, hex), usable in workflow code too. */
export function shortDigest(value: string): string {
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(value)) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash.toString(16).padStart(16, '0');
}

/**
 * The version part of an image's identity: its sha512 when known (the content), else its sha256
 * (an OCI layer's digest), else its declared version, else its download location.
 */
function imageRevision(event: ImageEvent): string {
  if (event.checksumSha512) return `sha512-${event.checksumSha512.slice(0, 32)}`;
  if (event.checksumSha256) return `sha256-${event.checksumSha256.slice(0, 32)}`;
  if (event.version) return `v-${idPart(event.version, 'none')}`;
  if (event.uri) return `uri-${shortDigest(event.uri)}`;
  return `file-${shortDigest(`${event.cacheDir ?? ''}/${event.filename ?? ''}`)}`;
}

/**
 * The site's cloud, as registration identities name it: its kind (`type`) and its configured name
 * (clouds/index.ts `registrationSite` reads them from the configuration). Where `eventsChoose` is
 * set, an event's or subscription's `cloud` names another cloud of that kind (Synnefo's kamaki clouds).
 */
export interface RegistrationSite {
  type: string;
  name?: string;
  eventsChoose?: boolean;
  /**
   * A deployment of several clouds (`clouds`, type `clouds`): each one's type and the VOs it takes,
   * by name. An event's `cloud` then names one of them, and one that names none goes to each of
   * `defaultClouds` whose VOs include its own.
   */
  clouds?: Record<string, { type: string; vos?: string[] }>;
  defaultClouds?: string[];
}

/**
 * Where a registration goes: the handler and the cloud, `<type>-<name>`. A trial with JustLogHandler
 * and the real registration, or the same image registered into two clouds (two kamaki clouds, a
 * Synnefo and a Glance cloud, two Glance clouds), are different registrations.
 */
export function registrationTarget(options: RegistrationOptions, site: RegistrationSite): string {
  const handler = options.handler ?? 'registerImage';
  if (handler === 'JustLogHandler') return 'log';
  if (handler === 'ThrowingHandler') return 'throwing';
  if (site.clouds) {
    // Names are checked by the configuration (1-40 characters of [A-Za-z0-9._-]): no digest needed.
    const name = chosenCloud(options);
    const cloud = name === undefined ? undefined : site.clouds[name];
    return cloud ? `${cloud.type}-${name}` : `unknown-${idPart(name, 'none')}`;
  }
  // A site whose events cannot choose registers into its configured cloud only.
  const cloud = (site.eventsChoose ? chosenCloud(options) : undefined) ?? site.name;
  const part = idPart(cloud, 'default');
  // A long cloud name keeps a digest of the whole, so two long names never share a target.
  return `${site.type}-${cloud && cloud.length > 40 ? `${part.slice(0, 23)}-${shortDigest(cloud)}` : part}`;
}

/** The revision an expire event names: its checksum, else the expired cache file's name. */
function expiredRevision(event: ImageEvent): string {
  return event.checksumSha512 || event.checksumSha256 ? imageRevision(event) : `f-${idPart(event.filename, 'none')}`;
}

/** Temporal accepts longer ids, but the Web UI and logs read better within 255 characters. */
const MAX_ID = 255;
function boundedId(parts: string[]): string {
  const id = parts.join(':');
  if (id.length <= MAX_ID) return id;
  const digest = shortDigest(id);
  return `${id.slice(0, MAX_ID - digest.length - 1)}~${digest}`;
}

function identityParts(event: ImageEvent, revision: string, target: string): string[] {
  return [target, idPart(event.imageListId, 'no-list'), idPart(event.imageId, 'no-id'), revision];
}

/** `register:<target>:<image list>:<image>:<revision>`: repeated events for one image revision share it. */
export function registerWorkflowId(event: ImageEvent, target: string): string {
  return boundedId(['register', ...identityParts(event, imageRevision(event), target)]);
}

/** `expire:<target>:<image list>:<image>:<revision or expired file name>`. */
export function expireWorkflowId(event: ImageEvent, target: string): string {
  return boundedId(['expire', ...identityParts(event, expiredRevision(event), target)]);
}

/**
 * `image:<target>:<image list>:<image>:<revision>`: the revision's coordinating workflow. An
 * Available and an Expire event of the same revision reach the same one; an expire event that
 * carries no checksum names the image's cache file instead, as expireWorkflowId does.
 */
export function imageRevisionWorkflowId(event: ImageEvent, action: RevisionAction, target: string): string {
  const revision = action === 'register' ? imageRevision(event) : expiredRevision(event);
  return boundedId(['image', ...identityParts(event, revision, target)]);
}

/** The id of the child an imageRevision workflow starts for an action. */
export function childWorkflowId(event: ImageEvent, action: RevisionAction, target: string): string {
  return action === 'register' ? registerWorkflowId(event, target) : expireWorkflowId(event, target);
}

/** What `claimHost` tells a workflow about the worker that will run its file-bound steps. */
export interface HostClaim {
  /** The worker's own task queue: every step that touches the image file runs there. */
  taskQueue: string;
  /**
   * The host's control queue: its slots and liveness. Its worker never runs out of task slots, so
   * a task there waiting to start means the host is gone, never that it is busy.
   */
  controlQueue: string;
  hostname: string;
  /** Timeouts and retries come from the worker's configuration, so sites (and tests) tune them without code. */
  heartbeatTimeoutMs: number;
  downloadTimeoutMs: number;
  toolTimeoutMs: number;
  /** How long a task may wait for this host's worker before the host counts as gone. */
  scheduleToStartTimeoutMs: number;
  retryInitialIntervalMs: number;
  retryMaximumIntervalMs: number;
  retryMaximumAttempts: number;
  /** How often a step short of disk space is tried again, and for how long at most. */
  diskWaitIntervalMs: number;
  diskWaitMaxMs: number;
  /** The disk formats the site's cloud takes (CloudTarget.diskFormats), for the steps' summaries. Absent in claims recorded before: raw. */
  diskFormats?: DiskFormat[];
}

/** The identity properties stored on the registered image, used to find it again. */
export const IDENTITY_PROPERTIES = {
  imageListId: 'VMCATCHER_IL_DC_IDENTIFIER',
  imageId: 'VMCATCHER_DC_IDENTIFIER',
  revision: 'VMCATCHER_REVISION',
} as const;

export function imageIdentity(event: ImageEvent): { imageListId: string; imageId: string; revision: string } {
  return {
    imageListId: idPart(event.imageListId, 'no-list'),
    imageId: idPart(event.imageId, 'no-id'),
    revision: imageRevision(event),
  };
}

// ---------------------------------------------------------------------------------------
// Subscriptions: one Temporal Schedule per subscribed list runs syncImageList.

export const SYNC_WORKFLOW = 'syncImageList';
/** The failure type of a list a sync refuses (signature, endorser, expiry, an older version, another list's id). */
export const LIST_REJECTED = 'ImageListRejected';
/**
 * The failure type of a sync that would expire more than `maxExpireFraction` of the list's
 * registered images: it stops before delivering anything, until `sync-now --allow-mass-expiry`.
 */
export const MASS_EXPIRY_REFUSED = 'MassExpiryRefused';
/** What a subscription may expire in one run, as a fraction of the images it has registered, unless configured. */
export const DEFAULT_MAX_EXPIRE_FRACTION = 0.5;

/** A subscribed registry project (oci/source.ts): where it is and which of its tags and repositories are taken. */
export interface RegistryProjectSpec {
  /** Base URL of the registry (`https://registry.egi.eu`). */
  registry: string;
  project: string;
  /** Tag pattern; the short tags when absent. */
  tags?: string;
  repositories?: string[];
  api?: 'auto' | 'harbor' | 'distribution';
}

/** One subscribed list or registry project, as the schedule's action carries it: names only, never a secret. */
export interface SubscriptionSpec {
  /** The list's URL, or `<registry origin>/<project>` for a registry project. */
  url: string;
  /**
   * Which source the run reads (the name of a SubscriptionSource, subscriptions/sources.ts); absent
   * for an image list, as in every schedule made before there was another source.
   */
  source?: string;
  /** The registry project, for the registry source (oci/). */
  registry?: RegistryProjectSpec;
  /** Name of an entry of the worker's security.credentials sent to the list's host (the registry's login for a registry). */
  credential?: string;
  /** The signers authorised for this list; empty means security.endorsers. */
  endorsers: Array<{ dn: string; ca: string }>;
  everyMs: number;
  /** The run timeout of the runs the schedule starts (absent in schedules made before run timeouts). */
  runTimeoutMs?: number;
  /** Overrides the list's VO for its events. */
  vo?: string;
  /** kamaki cloud (or cloud target) to register into; the site's default when absent. With `clouds` configured, the one cloud it registers into. */
  cloud?: string;
  /** The `clouds` it registers into, in a deployment of several; `defaultClouds` when absent. */
  clouds?: string[];
  /** Only these image identifiers of the list. */
  images?: string[];
  /** The list id (`dc:identifier`) this subscription speaks for, when the configuration fixes it; else the first accepted one. */
  listId?: string;
  /** Stop a run that would expire more than this fraction of the registered images (DEFAULT_MAX_EXPIRE_FRACTION). */
  maxExpireFraction?: number;
  /** Where the subscription is declared: application.conf (`subscriptions apply` owns it) or the `subscribe` command. */
  origin: 'config' | 'command';
}

/** How often a subscription is synced when it does not say: EGI's central sync runs every three hours. */
export const DEFAULT_SYNC_INTERVAL_MS = 3 * 3600_000;

/**
 * The longest one sync run may take unless the subscription says (`runTimeout`): the schedule
 * skips a run while another is in progress, so a run that never ends would hold it for good.
 */
export const DEFAULT_SYNC_RUN_TIMEOUT_MS = 3600_000;

/**
 * Registration options of a subscription's events: its cloud, when it names one, and, for a source
 * whose credential also fetches its images (a registry's login, which the acquire step resolves to
 * pull the layer), the name of that credential.
 */
export function subscriptionOptions(
  subscription: Pick<SubscriptionSpec, 'cloud' | 'credential'>,
  credentialFetchesImages: boolean,
): RegistrationOptions {
  const options: RegistrationOptions = subscription.cloud ? { cloud: subscription.cloud } : {};
  if (credentialFetchesImages && subscription.credential) options.credentialName = subscription.credential;
  return options;
}

const SCHEDULE_PREFIX = 'subscription:';

/**
 * `subscription:[<source>:]<host/path, readable>:<digest of the key>`: the schedule of a
 * subscription, by its source's name (none for an image list) and its key (the list's URL, the
 * registry project's `<origin>/<project>`); stable whatever the spelling in the configuration.
 */
export function scheduleIdOfKey(source: string | undefined, key: string): string {
  const parsed = new URL(key);
  const readable = `${parsed.host}${parsed.pathname}`
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 80);
  return `${SCHEDULE_PREFIX}${source ? `${source}:` : ''}${readable}:${shortDigest(key)}`;
}

/** Whether a schedule id is one of a subscription's. */
export function isSubscriptionSchedule(scheduleId: string): boolean {
  return scheduleId.startsWith(SCHEDULE_PREFIX);
}

/** `sync:<schedule id without its prefix>`: every run a subscription's schedule starts has a workflow id beginning so. */
export function syncWorkflowIdOf(scheduleId: string): string {
  return `sync:${scheduleId.slice(SCHEDULE_PREFIX.length)}`;
}

/** The entries of a read that are not valid images: kept (never expired as removed), and reported as unread. */
export function invalidEntriesKept(invalid: SyncSummary['invalid']): ReadGaps {
  // An entry without an identifier could be any image, so nothing is expired as removed this run.
  const named = invalid.filter((i) => i.identifier !== undefined);
  const unread = named.map((i) => ({ imageId: i.identifier!, problem: `invalid entry: ${i.problem}` }));
  const incomplete = named.length < invalid.length;
  if (incomplete)
    unread.push({
      imageId: '(entry without dc:identifier)',
      problem: 'the read is incomplete: nothing expired as removed',
    });
  return { unread, keep: named.map((i) => i.identifier!), incomplete };
}

/** What a read could not take: kept in the cloud as it is, never expired. */
interface ReadGaps {
  unread: NonNullable<SyncSummary['unread']>;
  /** Image ids to keep in the cloud though the read does not offer them (unread, invalid). */
  keep: string[];
  /** The read may lack images without naming them: nothing is expired as removed. */
  incomplete?: boolean;
  /** What the read asked of its source's server, when the source counts it (a registry). */
  requests?: SyncSummary['requests'];
}

/** What a sync run's read step is given: the subscription and the copy it accepted last. */
export interface SubscriptionReadInput {
  subscription: SubscriptionSpec;
  previous?: AcceptedList;
}

/**
 * What a subscription offers now, as its source read it: the accepted copy for this run, with what
 * could not be read (kept, never expired); or, for a source that can tell, that nothing changed
 * since the copy accepted last. `options` are the registration options of its events.
 */
export type SubscriptionRead = { options: RegistrationOptions } & (
  | { notModified: true; requests?: SyncSummary['requests'] }
  | ({ notModified: false; accepted: AcceptedList; invalid: SyncSummary['invalid'] } & ReadGaps)
);

export interface SyncImageListInput {
  subscription: SubscriptionSpec;
  /**
   * A one-off allowance to pass the mass-expiry guard (`sync-now --allow-mass-expiry` puts it in
   * the schedule's action for one run): honoured by a run that starts before `until` and only
   * once (the run that used it names it in its result, and the next run sees that).
   */
  allowMassExpiry?: { id: string; until: string };
}

export interface SyncedImage {
  imageId: string;
  title?: string;
  version?: string;
  reason: string;
  workflowId?: string;
  /** The cloud it was registered into or expired from, in a deployment of several (`clouds`). */
  cloud?: string;
}

/** What one sync did, shown in the Web UI (workflow result) and by `subscriptions`. */
export interface SyncSummary {
  url: string;
  listId?: string;
  version?: string;
  /** `not-modified`: the server said 304, the last accepted copy was reconciled with the cloud. */
  fetched: 'changed' | 'not-modified';
  registered: SyncedImage[];
  expired: SyncedImage[];
  unchanged: number;
  /** Entries of the list that are not valid images, with the reason. */
  invalid: Array<{ identifier?: string; problem: string }>;
  /** Images whose read failed this run (a registry repository or tag, a list entry that is not valid): kept, never expired. */
  unread?: Array<{ imageId: string; problem: string }>;
  /** Set when `sync-now --allow-mass-expiry` let this run expire more than `maxExpireFraction`. */
  massExpiryAllowed?: string;
  /**
   * A registry project: the requests the run's reads sent to the registry (token service apart), how
   * many were conditional (a manifest read last time, asked with its digest) and how many of
   * those the registry answered 304 Not Modified.
   */
  requests?: { total: number; conditional: number; notModified: number; tokens: number };
  /** Old public revisions that carry no sha512 to name them by: left for an operator. */
  unresolved: Array<{ imageId: string; revision: string; cloudImageId: string }>;
  /** Set when a list is larger than a summary names (at most 100 per category): how many there are of each. */
  counts?: { registered: number; expired: number; invalid: number; unread: number; unresolved: number };
  /**
   * A deployment of several clouds: what the run did in each, by name (`failed`: why it could not
   * see what the cloud holds; its images wait for a later run).
   */
  clouds?: Record<string, { registered: number; expired: number; unchanged: number; failed?: string }>;
}

/** `Image a 2 (updated)`: an image a sync acted on, as the CLI and the Web UI name it. */
export function syncedImageName(image: SyncedImage): string {
  return `${image.title ?? image.imageId}${image.version ? ` ${image.version}` : ''} (${image.reason}${image.cloud ? `, ${image.cloud}` : ''})`;
}

/** `cloud a: 2 registered, 0 expired, 1 unchanged`, one per cloud of a run in a deployment of several. */
export function perCloudLines(summary: SyncSummary): string[] {
  return Object.entries(summary.clouds ?? {}).map(([name, c]) =>
    c.failed !== undefined
      ? `cloud ${name}: FAILED, its images wait for the next run (${c.failed})`
      : `cloud ${name}: ${c.registered} registered, ${c.expired} expired, ${c.unchanged} unchanged`,
  );
}

/** `603 registry requests (300 conditional, 300 not modified)`: what a registry read cost. */
export function registryRequests(requests: NonNullable<SyncSummary['requests']>): string {
  const tokens = requests.tokens ? `, ${requests.tokens} to the token service` : '';
  return `${requests.total} registry requests (${requests.conditional} conditional, ${requests.notModified} not modified${tokens})`;
}

/** How many of each category a summary stands for: its `counts` when it names fewer than there are. */
export function syncSummaryCounts(summary: SyncSummary): NonNullable<SyncSummary['counts']> {
  return (
    summary.counts ?? {
      registered: summary.registered.length,
      expired: summary.expired.length,
      invalid: summary.invalid.length,
      unread: summary.unread?.length ?? 0,
      unresolved: summary.unresolved.length,
    }
  );
}

/** `, and 4,900 more` after the names of a category a summary names only in part. */
export function moreThanNamed(named: number, count: number): string {
  return count > named ? ` (and ${count - named} more)` : '';
}

/** What a sync did, in markdown, for the run's current details in the Web UI (User Metadata): counts first, then the images by title. */
export function syncSummaryMarkdown(summary: SyncSummary): string {
  const n = syncSummaryCounts(summary);
  const counts = [`${n.registered} registered`, `${n.expired} expired`, `${summary.unchanged} unchanged`];
  if (n.invalid) counts.push(`${n.invalid} invalid`);
  if (n.unread) counts.push(`${n.unread} unread (kept)`);
  if (summary.requests) counts.push(registryRequests(summary.requests));
  const lines = [
    `**${summary.listId ?? summary.url}**${summary.version ? ` version ${summary.version}` : ''} (${summary.fetched === 'not-modified' ? 'not modified' : 'read and verified'}): ${counts.join(', ')}`,
    '',
  ];
  const section = (title: string, items: string[], count = items.length) => {
    if (items.length)
      lines.push(`- ${title}${moreThanNamed(items.length, count)}:`, ...items.map((item) => `  - ${item}`));
  };
  section('Clouds', perCloudLines(summary));
  section('Registered', summary.registered.map(syncedImageName), n.registered);
  section('Expired', summary.expired.map(syncedImageName), n.expired);
  section(
    'Invalid entries',
    summary.invalid.map((i) => `${i.identifier ?? '?'}: ${i.problem}`),
    n.invalid,
  );
  section(
    'Unread, kept as they are',
    (summary.unread ?? []).map((u) => `${u.imageId}: ${u.problem}`),
    n.unread,
  );
  if (summary.massExpiryAllowed)
    lines.push(`- Mass expiry allowed by \`sync-now --allow-mass-expiry\` (${summary.massExpiryAllowed})`);
  section(
    'Old revisions without a sha512, left as they are',
    summary.unresolved.map((u) => `${u.imageId} (${u.cloudImageId})`),
    n.unresolved,
  );
  return lines.join('\n');
}

export interface SyncImageListResult {
  summary: SyncSummary;
  /** Carried to the next run as the schedule's last completion result. */
  accepted?: AcceptedList;
  /** The `allowMassExpiry` id this run used (or saw), so it is never used twice. */
  allowanceSeen?: string;
}

/** An image a list names, as the event a producer would enqueue, and whether its own `dc:date:expires` passed. */
export interface ListedImage {
  event: ImageEvent;
  expired: boolean;
}

/**
 * What a subscription accepted last: the list's id (the subscription's pin), version and dates,
 * the server's validators, its signer's certificate (so a 304 is checked again against the CAs,
 * CRLs and endorsers of now), the selection it was read with, and its images.
 */
export interface AcceptedList {
  listId: string;
  version?: string;
  /** `dc:date:created`: orders lists without `hv:version`. */
  created?: string;
  /** `dc:date:expires`: a 304 after it is refused. */
  expires?: string;
  /** The verified signer's certificate (PEM, public); absent for an unsigned list or one accepted by policy only. */
  signerPem?: string;
  /** The subscription's `images` and `vo` when this copy was read: a change makes the next run read the list again. */
  selection?: string;
  /** The VO of the list's images (the subscription's `vo`, else theirs): which clouds take it (their `vos`) when a run is answered 304. */
  vo?: string;
  /** The list's invalid entries: a run answered 304 keeps their images as the run that read them did. */
  invalid?: Array<{ identifier?: string; problem: string }>;
  /** The list's ETag; a registry project's validator (see `registry`). */
  etag?: string;
  lastModified?: string;
  /**
   * The images themselves while they are small (subscriptions/carried-copy.ts SMALL_COPY_BYTES) or
   * when the source reads against them; else empty, and `digests` stands for them.
   */
  images: ListedImage[];
  /**
   * A registry project, in copies made before `registry`: the digest each selected tag named when
   * read (`{ image: { tag: digest } }`), so the next run asks for each with If-None-Match.
   */
  manifests?: Record<string, Record<string, string>>;
  /**
   * A registry project (oci/remembered.ts): the digest each selected tag named when read (40 bytes
   * a tag, bounded by oci/source.ts MAX_REMEMBERED_TAGS), so the next run asks for each with
   * If-None-Match; and of each image accepted, its tag, manifest, disk and creation time, so a
   * copy without the images can still refuse a tag moved back and read the accepted image back.
   * With them, `etag` is the project's validator (a digest of every selected tag's manifest).
   */
  registry?: { tags: string; images: string };
  /** A large list's images as digests: 17 bytes an image (subscriptions/carried-copy.ts). */
  digests?: string;
  /** How many images `digests` stands for. */
  imageCount?: number;
  /** The read this copy came from was incomplete (an invalid entry without identifier): nothing was expired as removed. */
  incomplete?: boolean;
  /** How many invalid entries the list had, when more than `invalid` names. */
  invalidCount?: number;
  /** With `digests`: the registrations its run delivered, when few (what an expiry needs of each), so the next run can cancel one still on its way. */
  pending?: ImageEvent[];
}

/** What a sync run's step tells its run while it delivers: `done` of `total` events delivered. */
export interface SyncProgress {
  done: number;
  total: number;
}

/** The signal a sync run's step sends its run with its progress (the run shows it in its current details). */
export const SYNC_PROGRESS_SIGNAL = 'syncProgress';
