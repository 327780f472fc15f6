/**
 * The properties an image carries in Glance, the EGI way: what Nova and the dashboard read
 * (os_distro, os_version, architecture, os_type), what EGI's cloud-info-provider reads
 * (vmcatcher_event_dc_title/description, vmcatcher_event_ad_mpuri, APPLIANCE_ATTRIBUTES,
 * os_distro, os_version, architecture), the APPLIANCE_* keys cloudkeeper-os writes, and our
 * identity keys, which find the image again. Pure: no I/O. docs/glance.md lists them and why.
 */
import type { ImageEvent } from '../../core/event.js';
import { EVENT_FIELDS } from '../../core/event.js';
import { normaliseOsFamily, printable } from '../identity.js';
import { IDENTITY_PROPERTIES, imageIdentity } from '../../core/workflow-contract.js';

/** Glance's image schema caps every custom property value at 255 characters. */
export const MAX_PROPERTY_LENGTH = 255;
/**
 * Set by us once Glance's own hash of the stored bytes equals what we uploaded (`<algo>:<hex>`,
 * Glance's os_hash_algo and os_hash_value): only an image that carries it, matching, is reused.
 */
export const VERIFIED_PROPERTY = 'VMCATCHER_VERIFIED_HASH';

/** The tag on every image we create (atrope tags its images "atrope"). */
export const GLANCE_TAG = 'snf-vmcatcher';

/** Event fields copied as lower-case `vmcatcher_event_*` keys, as cloud-info-provider and atrope read them. */
const VMCATCHER_EVENT_KEYS = [
  'imageListId',
  'imageId',
  'title',
  'description',
  'mpUri',
  'version',
  'uri',
  'checksumSha512',
  'vo',
  'os',
  'osName',
  'osVersion',
  'arch',
  'hypervisor',
  'format',
  'size',
] as const satisfies ReadonlyArray<keyof typeof EVENT_FIELDS>;

/** cloudkeeper-os's APPLIANCE_* keys, from the event fields that carry the same meaning. */
const APPLIANCE_KEYS: ReadonlyArray<[string, keyof typeof EVENT_FIELDS]> = [
  ['APPLIANCE_ID', 'imageId'],
  ['APPLIANCE_IMAGE_LIST_ID', 'imageListId'],
  ['APPLIANCE_TITLE', 'title'],
  ['APPLIANCE_DESCRIPTION', 'description'],
  ['APPLIANCE_MPURI', 'mpUri'],
  ['APPLIANCE_VERSION', 'version'],
  ['APPLIANCE_ARCHITECTURE', 'arch'],
  ['APPLIANCE_OPERATING_SYSTEM', 'osName'],
  ['APPLIANCE_VO', 'vo'],
];

/** HEPiX image list keys for APPLIANCE_ATTRIBUTES (atrope stores the list's image entry there), most useful first. */
const HEPIX_ATTRIBUTES: ReadonlyArray<[string, keyof typeof EVENT_FIELDS]> = [
  ['ad:mpuri', 'mpUri'],
  ['dc:identifier', 'imageId'],
  ['hv:version', 'version'],
  ['sl:os', 'os'],
  ['sl:osname', 'osName'],
  ['sl:osversion', 'osVersion'],
  ['sl:arch', 'arch'],
  ['hv:format', 'format'],
  ['dc:title', 'title'],
];

/** Glance's os_distro names (libosinfo short ids) for the spellings image lists use. */
export function glanceOsDistro(osName: string | undefined): string | undefined {
  const v = osName?.trim().toLowerCase();
  if (!v) return undefined;
  const known: Array<[RegExp, string]> = [
    [/red\s*hat|rhel/, 'rhel'],
    [/suse linux enterprise|sles/, 'sles'],
    [/opensuse/, 'opensuse'],
    [/windows/, 'windows'],
    [/alma/, 'almalinux'],
    [/rocky/, 'rocky'],
    [/centos/, 'centos'],
    [/scientific/, 'scientificlinux'],
    [/ubuntu/, 'ubuntu'],
    [/debian/, 'debian'],
    [/fedora/, 'fedora'],
  ];
  for (const [pattern, name] of known) if (pattern.test(v)) return name;
  return v.replace(/[^a-z0-9.]+/g, '');
}

/** Glance's architecture names (libosinfo): x86_64, i686, aarch64, ppc64le, s390x… */
export function glanceArchitecture(arch: string | undefined): string | undefined {
  const v = arch?.trim().toLowerCase();
  if (!v) return undefined;
  if (['x86_64', 'amd64', 'x64', 'x86-64'].includes(v)) return 'x86_64';
  if (['i386', 'i486', 'i586', 'i686', 'x86', 'ia32'].includes(v)) return 'i686';
  if (['aarch64', 'arm64'].includes(v)) return 'aarch64';
  if (['ppc64le', 'ppc64el'].includes(v)) return 'ppc64le';
  return v;
}

/** Glance's os_type knows linux and windows only. */
function glanceOsType(event: ImageEvent, osfamily: string | undefined): string | undefined {
  const family = normaliseOsFamily(osfamily ?? event.os ?? event.osName);
  return family === 'linux' || family === 'windows' ? family : undefined;
}

interface GlanceProperties {
  properties: Record<string, string>;
  /** Keys whose values were cut to Glance's 255 characters. */
  truncated: string[];
}

export function buildGlanceProperties(input: {
  event: ImageEvent;
  /** An operator's OS family for this event (`-osfamily`), which wins over the list's. */
  osfamily?: string;
  /** Site-wide extras, e.g. hw_disk_bus or hw_qemu_guest_agent; ours and the event's win over them. */
  siteProperties?: Record<string, string>;
}): GlanceProperties {
  const { event } = input;
  const properties: Record<string, string> = {};
  const truncated: string[] = [];
  const put = (key: string, value: string | number | undefined) => {
    if (value === undefined) return;
    let text = printable(String(value));
    if (text === '') return;
    if (text.length > MAX_PROPERTY_LENGTH) {
      text = text.slice(0, MAX_PROPERTY_LENGTH);
      truncated.push(key);
    }
    properties[key] = text;
  };

  // Site extras never stand in for ours (identity, provenance, the verification mark, cloudkeeper's).
  for (const [key, value] of Object.entries(input.siteProperties ?? {}))
    if (!/^(vmcatcher_|appliance_)/i.test(key)) put(key, value);

  put('os_distro', glanceOsDistro(event.osName ?? event.os));
  put('os_version', event.osVersion);
  put('architecture', glanceArchitecture(event.arch));
  put('os_type', glanceOsType(event, input.osfamily));

  for (const field of VMCATCHER_EVENT_KEYS) put(EVENT_FIELDS[field].toLowerCase(), event[field]);
  for (const [key, field] of APPLIANCE_KEYS) put(key, event[field]);

  // A JSON object must stay whole: keep the most useful attributes that fit.
  const attributes: Record<string, string> = {};
  for (const [key, field] of HEPIX_ATTRIBUTES) {
    const value = event[field];
    if (value === undefined) continue;
    const candidate = { ...attributes, [key]: String(value) };
    if (JSON.stringify(candidate).length <= MAX_PROPERTY_LENGTH) Object.assign(attributes, candidate);
  }
  if (Object.keys(attributes).length > 0) put('APPLIANCE_ATTRIBUTES', JSON.stringify(attributes));

  // Identity last: nothing above may replace it.
  const identity = imageIdentity(event);
  properties[IDENTITY_PROPERTIES.imageListId] = identity.imageListId;
  properties[IDENTITY_PROPERTIES.imageId] = identity.imageId;
  properties[IDENTITY_PROPERTIES.revision] = identity.revision;
  return { properties, truncated };
}
