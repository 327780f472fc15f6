/**
 * The properties a registered image carries on Synnefo (Plankton), built from the event, the
 * per-event options, the site defaults and what snf-mkimage detected. Pure: no I/O.
 *
 * Synnefo refuses more than 32 properties per image, and property keys must match
 * `[A-Za-z0-9_]+` (kamaki upper-cases them). When there are too many, the least important go
 * first, in the order of `PROPERTY_RANKS` below; the identity properties are never dropped,
 * because they are how a retried or repeated registration finds the image again.
 */
import type { ImageEvent } from '../../core/event.js';
import { EVENT_FIELDS } from '../../core/event.js';
import { IDENTITY_PROPERTIES, imageIdentity, type RegistrationOptions } from '../../core/workflow-contract.js';
import { normaliseOsFamily, printable } from '../identity.js';

export const MAX_IMAGE_PROPERTIES = 32;
export const PROPERTY_KEY_PATTERN = /^[A-Za-z0-9_]+$/;

/**
 * The snf-image configuration tasks the original snf-vmcatcher always excluded (its
 * `sudo snf-mkimage … -m EXCLUDE_TASK_…=yes` call): deploying keeps the image as published.
 */
export const ORIGINAL_EXCLUDED_TASKS = [
  'EXCLUDE_TASK_DELETESSHKEYS',
  'EXCLUDE_TASK_FILESYSTEMRESIZEMOUNTED',
  'EXCLUDE_TASK_FIXPARTITIONTABLE',
  'EXCLUDE_TASK_FILESYSTEMRESIZEUNMOUNTED',
  'EXCLUDE_TASK_SELINUXAUTORELABEL',
  'EXCLUDE_TASK_ASSIGNHOSTNAME',
  'EXCLUDE_TASK_ADDSWAP',
  'EXCLUDE_TASK_CHANGEPASSWORD',
] as const;

/** Event fields copied as provenance properties, most useful first (AppDB link, title, version, checksum). */
const PROVENANCE_FIELDS = [
  'mpUri',
  'title',
  'version',
  'checksumSha512',
  'checksumSha256',
  'uri',
  'vo',
  'osName',
  'osVersion',
  'arch',
  'hypervisor',
  'format',
  'size',
  'description',
] as const satisfies ReadonlyArray<keyof typeof EVENT_FIELDS>;

/**
 * Importance ranks, lowest kept longest. When the 32-property limit bites, properties are
 * dropped from the highest rank down (and within a rank, from the last added).
 *  0 identity (never dropped)
 *  1 what snf-image needs to deploy: OSFAMILY, ROOT_PARTITION, USERS
 *  2 what snf-mkimage decided about deployment: EXCLUDE_ALL_TASKS, its EXCLUDE_TASK_*, PARTITION_TABLE, SWAP
 *  3 the original's EXCLUDE_TASK_* set
 *  4 the first four provenance fields (AppDB link, title, version, sha512)
 *  5 UI properties from snf-mkimage: OS, DESCRIPTION, GUI, KERNEL, SORTORDER
 *  6 the other provenance fields
 *  7 any other snf-mkimage metadata
 */
const PROPERTY_RANKS = {
  identity: 0,
  deploy: 1,
  preparedTasks: 2,
  originalTasks: 3,
  provenance: 4,
  ui: 5,
  moreProvenance: 6,
  otherMetadata: 7,
} as const;

const DEPLOY_KEYS = new Set(['OSFAMILY', 'ROOT_PARTITION', 'USERS']);
const UI_KEYS = new Set(['OS', 'DESCRIPTION', 'GUI', 'KERNEL', 'SORTORDER']);

interface PropertyDefaults {
  /** Site default OSFAMILY when neither the options, snf-mkimage nor the event tell. */
  osfamily?: string;
  /** Site default USERS when neither the options nor snf-mkimage tell. */
  users?: string;
}

interface BuiltProperties {
  properties: Record<string, string>;
  /** Keys left out because of the 32-property limit, in the order they were dropped. */
  dropped: string[];
  /** Metadata keys snf-mkimage gave that Synnefo would refuse. */
  rejected: string[];
  /** Properties the source named (annotations) that are ours alone, left out (isReservedProperty). */
  ignored: string[];
}

/** snf-image's own properties: how the image is deployed (help/image_properties.rst, snf-image's docs). */
const SNF_IMAGE_KEYS = new Set([
  'OSFAMILY',
  'ROOT_PARTITION',
  'USERS',
  'SWAP',
  'PARTITION_TABLE',
  'PASSWORD_HASHING_METHOD',
  'DO_SYNC',
  'CLOUD_INIT',
]);

/**
 * Properties only we set: the identity and provenance ones (every `VMCATCHER_*`: identity,
 * event fields, checksums), and snf-image's deployment ones (`OSFAMILY`, `ROOT_PARTITION`,
 * `USERS`, `EXCLUDE_*`, …). A source's annotations never set them, whatever they name.
 */
function isReservedProperty(key: string): boolean {
  const k = key.toUpperCase();
  return k.startsWith('VMCATCHER_') || k.startsWith('EXCLUDE_') || SNF_IMAGE_KEYS.has(k);
}

export function buildImageProperties(input: {
  event: ImageEvent;
  options: RegistrationOptions;
  /** What snf-mkimage wrote to the `.meta` file's `properties` (empty when not prepared). */
  metadata: Record<string, string>;
  defaults?: PropertyDefaults;
}): BuiltProperties {
  const { event, options, defaults = {} } = input;
  const entries = new Map<string, { value: string; rank: number; order: number }>();
  let order = 0;
  const put = (key: string, value: string | undefined, rank: number, override = true) => {
    if (value === undefined) return;
    const cleaned = printable(value);
    if (cleaned === '') return;
    const existing = entries.get(key);
    if (existing && !override) return;
    entries.set(key, {
      value: cleaned,
      rank: Math.min(rank, existing?.rank ?? rank),
      order: existing?.order ?? order++,
    });
  };

  // Identity values are ours: nothing from the metadata may replace them.
  const identityKeys = new Set<string>(Object.values(IDENTITY_PROPERTIES));
  const rejected: string[] = [];
  const metadata: Record<string, string> = {};
  for (const [rawKey, value] of Object.entries(input.metadata)) {
    const key = rawKey.toUpperCase();
    if (!PROPERTY_KEY_PATTERN.test(key)) rejected.push(rawKey);
    // snf-mkimage knows nothing of VMCATCHER_* keys: those are the event's and ours.
    else if (!identityKeys.has(key) && !key.startsWith('VMCATCHER_')) metadata[key] = String(value);
  }

  const identity = imageIdentity(event);
  put(IDENTITY_PROPERTIES.imageListId, identity.imageListId, PROPERTY_RANKS.identity);
  put(IDENTITY_PROPERTIES.imageId, identity.imageId, PROPERTY_RANKS.identity);
  put(IDENTITY_PROPERTIES.revision, identity.revision, PROPERTY_RANKS.identity);

  // An operator's explicit option wins; then what snf-mkimage found in the image; then the
  // image list's claim; then the site default. ROOT_PARTITION only ever comes from detection.
  const osfamily = normaliseOsFamily(options.osfamily ?? metadata.OSFAMILY ?? event.os ?? defaults.osfamily);
  put('OSFAMILY', osfamily, PROPERTY_RANKS.deploy);
  put('ROOT_PARTITION', metadata.ROOT_PARTITION, PROPERTY_RANKS.deploy);
  put('USERS', options.users ?? metadata.USERS ?? defaults.users, PROPERTY_RANKS.deploy);

  for (const [key, value] of Object.entries(metadata)) {
    if (DEPLOY_KEYS.has(key)) continue;
    if (key === 'EXCLUDE_ALL_TASKS' || key.startsWith('EXCLUDE_TASK_') || key === 'PARTITION_TABLE' || key === 'SWAP') {
      put(key, value, PROPERTY_RANKS.preparedTasks);
    }
  }
  for (const key of ORIGINAL_EXCLUDED_TASKS) put(key, 'yes', PROPERTY_RANKS.originalTasks, false);

  PROVENANCE_FIELDS.forEach((field, index) => {
    const value = event[field];
    const rank = index < 4 ? PROPERTY_RANKS.provenance : PROPERTY_RANKS.moreProvenance;
    put(EVENT_FIELDS[field], value === undefined ? undefined : String(value), rank);
  });

  for (const [key, value] of Object.entries(metadata)) {
    if (entries.has(key) || DEPLOY_KEYS.has(key)) continue;
    put(key, value, UI_KEYS.has(key) ? PROPERTY_RANKS.ui : PROPERTY_RANKS.otherMetadata);
  }
  // What the source names for the image (a registry's annotations: os_distro, eu.egi.cloud.tag…),
  // as Synnefo spells keys (OS_DISTRO, EU_EGI_CLOUD_TAG); they never replace a property set above,
  // and never set one of ours (identity, checksums, snf-image's), even where we set none.
  const ignored: string[] = [];
  for (const [key, value] of Object.entries(event.properties ?? {})) {
    const property = sourcePropertyKey(key);
    if (isReservedProperty(property) || !PROPERTY_KEY_PATTERN.test(property)) ignored.push(key);
    else put(property, value, PROPERTY_RANKS.ui, false);
  }
  const ranked = [...entries.entries()].sort((a, b) => a[1].rank - b[1].rank || a[1].order - b[1].order);
  const kept = ranked.slice(0, MAX_IMAGE_PROPERTIES);
  const dropped = ranked
    .slice(MAX_IMAGE_PROPERTIES)
    .reverse()
    .map(([key]) => key);
  const properties: Record<string, string> = {};
  for (const [key, entry] of kept) properties[key] = entry.value;
  for (const key of identityKeys) if (!(key in properties)) throw new Error(`identity property ${key} was dropped`);
  return { properties, dropped, rejected, ignored };
}

/** A source's property name as a Synnefo property key: `eu.egi.cloud.tag` → `EU_EGI_CLOUD_TAG`. */
function sourcePropertyKey(name: string): string {
  return name
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .toUpperCase();
}
