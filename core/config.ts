import { readFile, access } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import os from 'node:os';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { CredentialRuleSchema, CredentialSchema, literalCredentials } from './credentials.js';

// @pushcorn/hocon-parser is CommonJS; its default export carries `parse`.
const require = createRequire(import.meta.url);
const hocon = require('@pushcorn/hocon-parser') as {
  parse(opts: { url?: string; text?: string; strict?: boolean }): Promise<unknown>;
};

const hostPort = z.string().regex(/^[^\s:]+(:\d{1,5})?$/, 'expected "host" or "host:port"');

const sizeBytes = z.coerce.number().int().nonnegative();
const millis = z.coerce.number().int().positive();

/**
 * The `rabbitmq` block is the original snf-vmcatcher's, key for key; everything else is new
 * and has a default, so an original application.conf loads unchanged.
 */
const RabbitConfigSchema = z.object({
  servers: z.array(hostPort).min(1).default(['localhost:5672']),
  username: z.string().default('guest'),
  password: z.string().default('guest'),
  queue: z.string().min(1).default('vmcatcher'),
  exchange: z.string().min(1).default('vmcatcher'),
  routingKey: z.string().min(1).default('vmcatcher'),
  vhost: z.string().default('/'),
  /** Dead-letter queue for messages that are not valid events; defaults to `<queue>.dead`. */
  deadLetterQueue: z.string().min(1).optional(),
  prefetch: z.coerce.number().int().positive().default(16),
  heartbeatSeconds: z.coerce.number().int().nonnegative().default(30),
  connectTimeoutMs: millis.default(5000),
  confirmTimeoutMs: millis.default(10000),
});

const TemporalConfigSchema = z.object({
  address: hostPort.default('127.0.0.1:7233'),
  namespace: z.string().min(1).default('default'),
  taskQueue: z.string().min(1).default('snf-vmcatcher'),
  /** Base URL of the Web UI, used to print links to workflows. */
  webUiUrl: z.string().url().default('http://localhost:8233'),
  apiKey: z.string().optional(),
  tls: z.boolean().default(false),
});

const WorkerConfigSchema = z.object({
  /** Downloads, unpacked archives and converted images live here while a workflow runs. */
  workingFolder: z.string().min(1).default('/var/tmp/snf-vmcatcher'),
  /** Name of this host's own task queue; defaults to `<taskQueue>-<hostname>`. */
  hostTaskQueue: z.string().min(1).optional(),
  maxConcurrentActivities: z.coerce.number().int().positive().default(8),
  /** File-bound steps (download, convert, prepare, upload) are disk and CPU heavy. */
  maxConcurrentFileSteps: z.coerce.number().int().positive().default(2),
  maxConcurrentWorkflowTasks: z.coerce.number().int().positive().default(40),
  shutdownGraceMs: millis.default(30000),
  metricsPort: z.coerce.number().int().nonnegative().default(0),
  /** Prometheus metrics of images and subscriptions (registered, failed, step durations…); 0 = off. */
  productMetricsPort: z.coerce.number().int().nonnegative().default(0),
  /** Step timeouts; long defaults because real images are GBs and sysprep boots a VM. */
  downloadTimeoutMs: millis.default(2 * 60 * 60 * 1000),
  toolTimeoutMs: millis.default(60 * 60 * 1000),
  /** A running step that has not heartbeated for this long is retried (its worker died). */
  heartbeatTimeoutMs: millis.default(60 * 1000),
  /**
   * A host whose control queue has not picked up a task in this time is gone: its registrations move
   * to another host. A busy host is not gone: images wait for one of its slots however long that takes.
   */
  hostScheduleToStartTimeoutMs: millis.default(10 * 60 * 1000),
  retryInitialIntervalMs: millis.default(10 * 1000),
  retryMaximumIntervalMs: millis.default(10 * 60 * 1000),
  retryMaximumAttempts: z.coerce.number().int().positive().default(8),
  /** Kept free on the working folder's filesystem: the larger of these two. */
  diskReserveBytes: sizeBytes.default(1024 ** 3),
  diskReservePercent: z.coerce.number().min(0).max(90).default(2),
  /** A step short of disk space waits (stage waiting-for-disk) and tries again this often… */
  diskWaitIntervalMs: millis.default(60 * 1000),
  /** …for this long at most, then the registration fails naming the space it needed. */
  diskWaitMaxMs: millis.default(24 * 60 * 60 * 1000),
  /** How often the worker removes work folders whose workflow is closed (also once at start). */
  sweepIntervalMs: millis.default(60 * 60 * 1000),
  /**
   * How long a verified image file stays on the host after the last registration holding it let go
   * (several clouds registering one revision download it once; one that was down catches up without
   * a new download). Idle files go sooner when a step is short of space.
   */
  verifiedFileKeepMs: millis.default(60 * 60 * 1000),
  /** How often the worker checks that the images holding its slots are still running. */
  slotAuditIntervalMs: millis.default(60 * 1000),
  /** How many image events a subscription's sync run delivers at once (signal-with-start each). */
  subscriptionDeliveries: z.coerce.number().int().positive().default(16),
  /** At start, make the Temporal Schedules match `subscriptions` (as `subscriptions apply` does). */
  applySubscriptions: z.boolean().default(true),
});

const SynnefoConfigSchema = z.object({
  kamaki: z.string().min(1).default('kamaki'),
  snfMkimage: z.string().min(1).default('snf-mkimage'),
  /** Command prefix for snf-mkimage, which needs root. An empty list runs it directly. */
  sudo: z.array(z.string()).default(['sudo', '-n']),
  /** Run snf-mkimage (sysprep, shrink, metadata). Off uploads the raw image as converted. */
  prepare: z.boolean().default(true),
  /**
   * Pass --allow-unsupported to snf-mkimage: register images whose OS it cannot recognise,
   * with every deployment task disabled (EXCLUDE_ALL_TASKS=yes) instead of failing.
   */
  allowUnsupported: z.boolean().default(false),
  /** Default kamaki cloud name (from ~/.kamakirc) when an event or command names none. */
  cloud: z.string().min(1).optional(),
  container: z.string().min(1).default('images'),
  public: z.boolean().default(true),
  /** What an ExpirePostfix event does to the registered image. */
  expireAction: z.enum(['make-private', 'unregister']).default('make-private'),
  osfamily: z.string().default('linux'),
  users: z.string().default('root'),
});

/**
 * An OpenStack Glance cloud (docs/glance.md). Keystone v3 authenticates with an application
 * credential (`applicationCredentialId`) or a user's password (`username` and `project`); either
 * way the secret is named by `credential`, an entry of security.credentials, never written here.
 */
/** A cloud's name: registrations into it are told apart from others' by `<type>-<name>`. */
const CloudNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,40}$/, 'expected 1-40 letters, digits, dots, dashes or underscores');

/** The settings of a Glance cloud, without its name (a `clouds` entry's name is its key). */
const GlanceSettingsShape = z.object({
  type: z.literal('glance'),
  /** Keystone's v3 URL, e.g. https://keystone.example.org:5000/v3. */
  authUrl: z.string().url(),
  applicationCredentialId: z.string().min(1).optional(),
  username: z.string().min(1).optional(),
  userDomain: z.string().min(1).default('Default'),
  project: z.string().min(1).optional(),
  projectDomain: z.string().min(1).default('Default'),
  /** Name of the security.credentials entry holding the application credential's secret or the password. */
  credential: z.string().min(1),
  /** Region of the image endpoint in Keystone's catalog; needed when the catalog has several. */
  region: z.string().min(1).optional(),
  interface: z.enum(['public', 'internal', 'admin']).default('public'),
  /** `public` needs the admin role in Glance's default policy; `shared` adds the image's VO project as a member. */
  visibility: z.enum(['public', 'private', 'shared', 'community']).default('private'),
  /** VO name → Keystone project id: a `shared` image of a VO is shared with its project (as atrope's voms.json). */
  voProjects: z.record(z.string(), z.string().min(1)).default({}),
  /**
   * Image list dc:identifier → VO, for images that do not come from a subscription (queued
   * events, register-now): the VO whose project a `shared` image joins. A queued event's own
   * VMCATCHER_EVENT_VO never chooses it (docs/glance.md, "Sharing").
   */
  imageListVos: z.record(z.string(), z.string().min(1)).default({}),
  /**
   * Disk formats this cloud takes, preferred first. A qcow2 image is uploaded as qcow2 when
   * `qcow2` is listed; otherwise it is converted to raw (e.g. for a Ceph RBD backend).
   */
  diskFormats: z
    .array(z.enum(['qcow2', 'raw']))
    .min(1)
    .default(['qcow2', 'raw']),
  /** What an expiry does: deactivate the image and make it private, or delete it. */
  expireAction: z.enum(['deactivate', 'delete']).default('deactivate'),
  /** Glance's `[DEFAULT] hashing_algorithm`, computed while uploading and compared with os_hash_value. */
  hashAlgorithm: z.string().min(1).default('sha512'),
  /** Extra properties on every image, e.g. hw_disk_bus = virtio, hw_qemu_guest_agent = yes. */
  properties: z.record(z.string(), z.string()).default({}),
});

/** Keystone needs one way to log in: an application credential, or a user's password in a project. */
function oneLogin(glance: z.infer<typeof GlanceSettingsShape>, ctx: z.RefinementCtx): void {
  const byPassword = glance.username !== undefined || glance.project !== undefined;
  if (glance.applicationCredentialId !== undefined && byPassword) {
    ctx.addIssue({
      code: 'custom',
      path: ['applicationCredentialId'],
      message: 'give applicationCredentialId or username and project, not both',
    });
  } else if (
    glance.applicationCredentialId === undefined &&
    !(glance.username !== undefined && glance.project !== undefined)
  ) {
    ctx.addIssue({
      code: 'custom',
      path: ['applicationCredentialId'],
      message: 'give applicationCredentialId (recommended) or username and project',
    });
  }
}

/** The single `cloud { type = glance, name = … }` block of a site with one cloud. */
const GlanceConfigSchema = GlanceSettingsShape.extend({ name: CloudNameSchema }).strict().superRefine(oneLogin);
export type GlanceConfig = z.infer<typeof GlanceConfigSchema>;

/** Where registrations go: Synnefo (the `synnefo` block's settings) or a Glance cloud. */
const CloudConfigSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('synnefo') }).strict(),
  GlanceConfigSchema,
]);

/** Only events of these VOs reach a `clouds` entry (a subscription's `vo`, else its list's VO); every VO when absent. */
const VosSchema = z.array(z.string().min(1)).min(1).optional();

/**
 * A Synnefo cloud of `clouds`: the `synnefo` block's settings, per cloud (a key left out takes the
 * block's value), and the kamaki cloud (of ~/.kamakirc) it is reached through.
 */
const SynnefoCloudSchema = z
  .object({
    type: z.literal('synnefo'),
    kamakiCloud: z.string().min(1).optional(),
    kamaki: z.string().min(1).optional(),
    snfMkimage: z.string().min(1).optional(),
    sudo: z.array(z.string()).optional(),
    prepare: z.boolean().optional(),
    allowUnsupported: z.boolean().optional(),
    container: z.string().min(1).optional(),
    public: z.boolean().optional(),
    expireAction: z.enum(['make-private', 'unregister']).optional(),
    osfamily: z.string().optional(),
    users: z.string().optional(),
    vos: VosSchema,
  })
  .strict();

/** A Glance cloud of `clouds`: what `cloud { type = glance }` holds, but its name is its key. */
const GlanceCloudSchema = GlanceSettingsShape.extend({ vos: VosSchema }).strict().superRefine(oneLogin);

/** One entry of `clouds`: a cloud this deployment registers into, by its type. */
const CloudEntrySchema = z.discriminatedUnion('type', [SynnefoCloudSchema, GlanceCloudSchema]);
export type CloudEntry = z.infer<typeof CloudEntrySchema>;

const SignaturePolicySchema = z.enum(['require', 'warn', 'accept']);

/**
 * A DN in either common spelling: OpenSSL's slash form (`/C=…/O=…/CN=…`, what vmcatcher and
 * AppDB write) or RFC 2253 (`CN=…,O=…,C=…`); compared after normaliseDn.
 */
const DnSchema = z
  .string()
  .trim()
  .min(1)
  .refine((dn) => dn.includes('='), 'expected a DN such as "/C=GR/O=Org/CN=name" or "CN=name,O=Org,C=GR"');

/** Who may sign an image list: the signer's subject DN and the DN of the CA that issued its certificate. */
const EndorserSchema = z.object({ dn: DnSchema, ca: DnSchema }).strict();
export type Endorser = z.infer<typeof EndorserSchema>;

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_SPELLINGS: Record<string, string> = {
  ms: 'ms',
  millisecond: 'ms',
  milliseconds: 'ms',
  s: 's',
  second: 's',
  seconds: 's',
  m: 'm',
  minute: 'm',
  minutes: 'm',
  h: 'h',
  hour: 'h',
  hours: 'h',
  d: 'd',
  day: 'd',
  days: 'd',
};

/** A HOCON duration ("6h", "30 minutes") or a number of milliseconds → milliseconds. */
export const DurationSchema = z.union([z.number(), z.string()]).transform((value, ctx) => {
  let ms = NaN;
  if (typeof value === 'number') ms = value;
  else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
    const unit = m ? DURATION_SPELLINGS[(m[2] || 'ms').toLowerCase()] : undefined;
    if (m && unit) ms = Math.round(Number(m[1]) * DURATION_UNITS[unit]);
  }
  if (!(Number.isInteger(ms) && ms > 0)) {
    ctx.addIssue({
      code: 'custom',
      message: `'${value}' is not a duration (e.g. "6h", "30 minutes", or milliseconds)`,
    });
    return z.NEVER;
  }
  return ms;
});

/** An image list URL in the configuration: http(s) or file, without credentials in it. */
const ListUrlSchema = z.string().superRefine((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `'${text}' is not a URL` });
    return;
  }
  if (!['http:', 'https:', 'file:'].includes(url.protocol)) {
    ctx.addIssue({
      code: 'custom',
      message: `scheme ${url.protocol} is not supported (expected https:, http: or file:)`,
    });
  }
  if (url.username || url.password) {
    ctx.addIssue({
      code: 'custom',
      message:
        "the URL carries credentials: name a credential (security.credentials) in the subscription's credential instead",
    });
  }
});

/**
 * A sync that would expire more than this fraction of the images a subscription registered stops
 * before delivering (`sync-now --allow-mass-expiry` lets one run through). Default 0.5.
 */
const MaxExpireFractionSchema = z.number().min(0).max(1);

/**
 * The longest one sync run of a subscription may take (the workflow run timeout of the runs its
 * schedule starts): a run still going then is timed out by the server, so a stuck read cannot
 * hold the schedule, which skips a run while another is in progress. Default 1 h.
 */
const RunTimeoutSchema = DurationSchema;

/**
 * One image list this site trusts: where it is, who may sign it and which credential fetches
 * it; `every` (default 3 h), `vo`, `cloud`, `images` and `paused` shape its schedule
 * (subscriptions/schedules.ts).
 */
export const SubscriptionSchema = z
  .object({
    url: ListUrlSchema,
    /** Name of an entry of security.credentials sent to the list's host. */
    credential: z.string().min(1).optional(),
    endorser: EndorserSchema.optional(),
    endorsers: z.array(EndorserSchema).optional(),
    every: DurationSchema.optional(),
    vo: z.string().min(1).optional(),
    cloud: z.string().min(1).optional(),
    /** The `clouds` it registers into (default: defaultClouds); with `clouds` configured, `cloud = x` means `clouds = [x]`. */
    clouds: z.array(CloudNameSchema).min(1).optional(),
    images: z.array(z.string().min(1)).optional(),
    /**
     * The list id (`dc:identifier`) this subscription speaks for. Unset: the id of the first list
     * it accepts, pinned from then on. A list carrying another id is refused.
     */
    listId: z.string().min(1).optional(),
    maxExpireFraction: MaxExpireFractionSchema.optional(),
    runTimeout: RunTimeoutSchema.optional(),
    /** Keep the schedule but take no runs (`subscriptions apply` pauses it). */
    paused: z.boolean().optional(),
  })
  .strict();
export type Subscription = z.infer<typeof SubscriptionSchema>;

/** A URL of http(s), without credentials (a registry's, a token service's). */
const RegistryUrlBase = z.string().superRefine((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `'${text}' is not a URL (expected https://…)` });
    return;
  }
  if (!['http:', 'https:'].includes(url.protocol))
    ctx.addIssue({ code: 'custom', message: `scheme ${url.protocol} is not supported (expected https:)` });
  if (url.username || url.password)
    ctx.addIssue({ code: 'custom', message: 'the URL carries credentials: name a credential instead' });
});

/** A registry's base URL: http(s), nothing but the host (and port), no credentials. */
const RegistryUrlSchema = z.string().superRefine((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `'${text}' is not a URL (expected https://registry.example.org)` });
    return;
  }
  if (!['http:', 'https:'].includes(url.protocol))
    ctx.addIssue({ code: 'custom', message: `scheme ${url.protocol} is not supported (expected https: or http:)` });
  if (url.username || url.password) {
    ctx.addIssue({
      code: 'custom',
      message:
        "the URL carries credentials: name a credential (security.credentials) in the subscription's credential instead",
    });
  }
  if (url.pathname !== '/' || url.search)
    ctx.addIssue({ code: 'custom', message: `name the registry only (${url.origin}); the project goes in project` });
});

/**
 * A registry project this site subscribes to (oci/): each repository of the project is
 * an image, the manifest its selected tag names is its current revision. Written among
 * `subscriptions`, told apart by its `registry` key; parsed into `registrySubscriptions`.
 */
export const RegistrySubscriptionSchema = z
  .object({
    registry: RegistryUrlSchema,
    project: z
      .string()
      .regex(
        /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/,
        'must be a registry project or repository prefix (lower case, e.g. egi_vm_images)',
      ),
    /** Tags to take (a regular expression). Unset: the short tags, as EGI's central sync (^[^-]+$). */
    tags: z
      .string()
      .min(1)
      .refine((text) => {
        try {
          new RegExp(text);
          return true;
        } catch {
          return false;
        }
      }, 'must be a regular expression')
      .optional(),
    /** Name of an entry of security.credentials, written "user:password" (a Harbor robot account). */
    credential: z.string().min(1).optional(),
    /** Only these repositories (names inside the project). */
    repositories: z.array(z.string().min(1)).optional(),
    /** How to list the project: Harbor's API, the distribution catalog, or whichever the registry is (default). */
    api: z.enum(['auto', 'harbor', 'distribution']).optional(),
    /**
     * The registry's token service when it is not on the registry's own origin (Docker Hub's
     * auth.docker.io, a GitLab instance): the only other realm the login is sent to. https.
     */
    tokenRealm: RegistryUrlBase.optional(),
    /** Tests only: plain http may carry the login and tokens when the registry (and realm) are on 127.0.0.1. */
    plainHttpOnLoopback: z.boolean().optional(),
    /** The most pages one listing (the catalog, a repository's tags) may take; more fails that listing. */
    maxPages: z.number().int().positive().optional(),
    /** The most names one listing may give (the project's repositories, a repository's tags). */
    maxItems: z.number().int().positive().optional(),
    every: DurationSchema.optional(),
    vo: z.string().min(1).optional(),
    cloud: z.string().min(1).optional(),
    /** The `clouds` it registers into (default: defaultClouds); with `clouds` configured, `cloud = x` means `clouds = [x]`. */
    clouds: z.array(CloudNameSchema).min(1).optional(),
    maxExpireFraction: MaxExpireFractionSchema.optional(),
    runTimeout: RunTimeoutSchema.optional(),
    paused: z.boolean().optional(),
  })
  .strict()
  .superRefine((sub, ctx) => {
    const parse = (text: string): URL | undefined => {
      try {
        return new URL(text);
      } catch {
        return undefined;
      }
    };
    const loopback = (text: string) => ['127.0.0.1', '[::1]'].includes(parse(text)?.hostname ?? '');
    if (sub.plainHttpOnLoopback && !loopback(sub.registry))
      ctx.addIssue({
        code: 'custom',
        path: ['plainHttpOnLoopback'],
        message: 'is for a test registry on 127.0.0.1 only; a registry elsewhere is reached over https',
      });
    const realm = sub.tokenRealm ? parse(sub.tokenRealm) : undefined;
    if (realm && realm.protocol !== 'https:' && !(sub.plainHttpOnLoopback && loopback(realm.href)))
      ctx.addIssue({
        code: 'custom',
        path: ['tokenRealm'],
        message: 'must be https: the registry login is sent there',
      });
  });
export type RegistrySubscription = z.infer<typeof RegistrySubscriptionSchema>;

/**
 * A kind of `subscriptions` entry: one per source of subscriptions (subscriptions/sources.ts reads
 * them back by the list they land in). Each is told apart by a key only its entries have (the
 * image list, which has none, takes any other entry), says how two entries are the same
 * subscription, and which list id an entry claims.
 */
interface EntryKind<T> {
  schema: z.ZodType<T>;
  /** The key only this kind's entries have; none for the kind that takes the others. */
  marker?: keyof T & string;
  /** The list of the parsed configuration its entries land in. */
  into: 'subscriptions' | 'registrySubscriptions';
  /** The same subscription twice: the same key. `field` and `what` name it in the message. */
  same: { key: (entry: T) => string; field: keyof T & string; what: string };
  /** The list id the entry speaks for from the start (a registry project's `host/project`). */
  ownListId?: (entry: T) => string;
  /** The list id the configuration fixes for it (`listId`): no other entry's. */
  fixedListId?: (entry: T) => string | undefined;
}

const kind = <T>(k: EntryKind<T>) => k as EntryKind<unknown>;

/** The kinds of entries, asked in order: the first whose marker the entry has parses it. */
const ENTRY_KINDS: readonly EntryKind<unknown>[] = [
  kind<RegistrySubscription>({
    schema: RegistrySubscriptionSchema,
    marker: 'registry',
    into: 'registrySubscriptions',
    same: { key: (sub) => registrySubscriptionKey(sub), field: 'project', what: 'project' },
    ownListId: (sub) => registryListId(sub.registry, sub.project),
  }),
  kind<Subscription>({
    schema: SubscriptionSchema,
    into: 'subscriptions',
    same: { key: (sub) => subscriptionKey(sub.url), field: 'url', what: 'list' },
    fixedListId: (sub) => sub.listId,
  }),
];

function kindOf(entry: unknown): EntryKind<unknown> {
  const has = (key: string) => typeof entry === 'object' && entry !== null && key in entry;
  return ENTRY_KINDS.find((k) => k.marker === undefined || has(k.marker))!;
}

type SubscriptionEntry = (Subscription | RegistrySubscription) & { credential?: string };

/** One entry of `subscriptions`, parsed by its kind's schema. */
const SubscriptionEntrySchema = z.unknown().transform((entry, ctx): SubscriptionEntry => {
  const result = kindOf(entry).schema.safeParse(entry);
  if (result.success) return result.data as SubscriptionEntry;
  for (const issue of result.error.issues)
    ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path as PropertyKey[] });
  return z.NEVER;
});

/** `registry.egi.eu/egi_vm_images`: how a project is named as an image list. */
export function registryListId(registry: string, project: string): string {
  return `${new URL(registry).host}/${project.replace(/^\/+|\/+$/g, '')}`;
}

/** How registry subscriptions are matched: the registry's origin and the project. */
export function registrySubscriptionKey(sub: Pick<RegistrySubscription, 'registry' | 'project'>): string {
  return `${new URL(sub.registry).origin}/${sub.project}`;
}

const SecurityConfigSchema = z.object({
  /** CA directory (hashed, like /etc/grid-security/certificates) or a single CA file. */
  caPath: z.string().min(1).default('/etc/grid-security/certificates'),
  /** Unsigned or unverifiable lists: refuse (`require`), accept with a warning, or accept. */
  signaturePolicy: SignaturePolicySchema.default('require'),
  /** The signer must equal the list's declared hv:endorser (DN and CA). */
  pinEndorser: z.boolean().default(true),
  /** Signers authorised for any list that no subscription names (e.g. an ad-hoc enqueue-from-image-list). */
  endorsers: z.array(EndorserSchema).default([]),
  /**
   * A verified signer that is not an authorised endorser: refuse, warn or accept.
   * Unset: the same as signaturePolicy (so `require` by default).
   */
  endorserPolicy: SignaturePolicySchema.optional(),
  /** `auto`: check CRLs when the caPath folder holds `*.r0` files (as fetch-crl writes them); `off`: never. */
  crlCheck: z.enum(['auto', 'off']).default('auto'),
  /**
   * Register an image whose event carries no checksum (neither sha512 nor sha256)? Off: such an
   * event is refused before anything is fetched. vmcatcher cache files (verified by vmcatcher)
   * and the operator's own `register-now`/`transform` are registered without it (docs/pipeline.md).
   */
  allowUnverifiedImages: z.boolean().default(false),
  /** Folders `file:` URLs may read from. Empty: no `file:` URLs at all. */
  allowedFileFolders: z.array(z.string()).default([]),
  /** Folders vmcatcher cache events may point into (VMCATCHER_CACHE_DIR_CACHE). Empty: none. */
  vmcatcherCacheFolders: z.array(z.string()).default(['/var/lib/vmcatcher/cache', '/var/cache/vmimages/endorsed']),
  maxImageListBytes: sizeBytes.default(16 * 1024 * 1024),
  maxImageBytes: sizeBytes.default(64 * 1024 ** 3),
  /** Unset: what the working folder's filesystem can hold (its size less the disk reserve). */
  maxUnpackedBytes: sizeBytes.optional(),
  /** Unset: what the working folder's filesystem can hold (its size less the disk reserve). */
  maxVirtualBytes: sizeBytes.optional(),
  maxArchiveEntries: z.coerce.number().int().positive().default(64),
  maxRedirects: z.coerce.number().int().nonnegative().default(5),
  connectTimeoutMs: millis.default(30000),
  readTimeoutMs: millis.default(120000),
  /**
   * Named credentials (e.g. AppDB tokens): a string, `{ file = "/path" }` or `{ env = "VAR" }`.
   * Workflows carry the name; workers resolve it here (core/credentials.ts).
   */
  credentials: z.record(z.string(), CredentialSchema).default({}),
  /** Which credential a download sends, by image host or image list; the first rule that matches. */
  credentialRules: z.array(CredentialRuleSchema).default([]),
});

const SpoolConfigSchema = z.object({
  folder: z.string().min(1).default('/var/spool/snf-vmcatcher'),
});

const BridgeConfigSchema = z.object({
  metricsPort: z.coerce.number().int().nonnegative().default(0),
  /** Pause between messages in server mode (the original -sleepMillis). */
  sleepMillis: z.coerce.number().int().nonnegative().default(0),
});

export const ConfigSchema = z
  .object({
    rabbitmq: RabbitConfigSchema.prefault({}),
    temporal: TemporalConfigSchema.prefault({}),
    worker: WorkerConfigSchema.prefault({}),
    synnefo: SynnefoConfigSchema.prefault({}),
    cloud: CloudConfigSchema.default({ type: 'synnefo' }),
    /**
     * The clouds this deployment registers into, by name (docs/operations.md, "Many clouds"). Empty:
     * the site's one cloud is the `cloud` block (or the `synnefo` block), as before there were several.
     */
    clouds: z.record(CloudNameSchema, CloudEntrySchema).default({}),
    /** Where an event that names no cloud goes (vmcatcher's hook, register-now without --cloud); default: every cloud. */
    defaultClouds: z.array(CloudNameSchema).min(1).optional(),
    security: SecurityConfigSchema.prefault({}),
    spool: SpoolConfigSchema.prefault({}),
    bridge: BridgeConfigSchema.prefault({}),
    /** Image lists and registry projects this site subscribes to. */
    subscriptions: z.array(SubscriptionEntrySchema).default([]),
  })
  .superRefine((config, ctx) => {
    const seen = new Map<string, number>();
    config.subscriptions.forEach((sub, i) => {
      if (sub.credential !== undefined && !(sub.credential in config.security.credentials)) {
        ctx.addIssue({
          code: 'custom',
          path: ['subscriptions', i, 'credential'],
          message: `credential '${sub.credential}' is not defined in security.credentials`,
        });
      }
      const { same } = kindOf(sub);
      const key = same.key(sub);
      const earlier = seen.get(key);
      if (earlier !== undefined) {
        const { field, what } = same;
        ctx.addIssue({
          code: 'custom',
          path: ['subscriptions', i, field],
          message: `the same ${what} as subscriptions.${earlier}`,
        });
      }
      seen.set(key, i);
    });
    // A list id belongs to one subscription: a configured listId is no other's, nor a registry project's `host/project`.
    const owners = new Map<string, number>();
    config.subscriptions.forEach((sub, i) => {
      const own = kindOf(sub).ownListId?.(sub);
      if (own !== undefined) owners.set(own, i);
    });
    config.subscriptions.forEach((sub, i) => {
      const listId = kindOf(sub).fixedListId?.(sub);
      if (listId === undefined) return;
      const owner = owners.get(listId);
      if (owner !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['subscriptions', i, 'listId'],
          message: `list id '${listId}' is already subscriptions.${owner}'s`,
        });
      }
      owners.set(listId, i);
    });
    // A cloud that logs in with a named credential (Glance's Keystone) names one that exists.
    const logins: Array<[PropertyKey[], object]> = [
      [['cloud'], config.cloud],
      ...Object.entries(config.clouds).map(([name, entry]): [PropertyKey[], object] => [['clouds', name], entry]),
    ];
    for (const [at, cloud] of logins) {
      const credential = 'credential' in cloud ? (cloud.credential as string) : undefined;
      if (credential !== undefined && !(credential in config.security.credentials)) {
        ctx.addIssue({
          code: 'custom',
          path: [...at, 'credential'],
          message: `credential '${credential}' is not defined in security.credentials`,
        });
      }
    }
    // Every cloud a deployment sends images to is one of its `clouds`.
    const named = (at: PropertyKey[], names: readonly string[] | undefined) =>
      names?.forEach((name, i) => {
        if (!(name in config.clouds))
          ctx.addIssue({
            code: 'custom',
            path: [...at, i],
            message:
              Object.keys(config.clouds).length === 0
                ? `cloud '${name}': no clouds are configured (the clouds block is empty)`
                : `cloud '${name}' is not one of clouds (${Object.keys(config.clouds).join(', ')})`,
          });
      });
    named(['defaultClouds'], config.defaultClouds);
    config.subscriptions.forEach((sub, i) => {
      if (sub.clouds !== undefined) named(['subscriptions', i, 'clouds'], sub.clouds);
      else if (Object.keys(config.clouds).length > 0 && sub.cloud !== undefined)
        named(['subscriptions', i, 'cloud'], [sub.cloud]);
    });
  })
  .transform(({ subscriptions, ...config }) => ({
    ...config,
    subscriptions: subscriptions.filter((s) => kindOf(s).into === 'subscriptions') as Subscription[],
    registrySubscriptions: subscriptions.filter(
      (s) => kindOf(s).into === 'registrySubscriptions',
    ) as RegistrySubscription[],
  }));

/** How subscriptions and command-line URLs are matched: parsed, without credentials or fragment. */
export function subscriptionKey(url: string | URL): string {
  try {
    const u = new URL(typeof url === 'string' ? url : url.href);
    u.username = '';
    u.password = '';
    u.hash = '';
    return u.href;
  } catch {
    return String(url);
  }
}

export type Config = z.infer<typeof ConfigSchema>;
export type RabbitConfig = Config['rabbitmq'];
export type TemporalConfig = Config['temporal'];
export type SignaturePolicy = z.infer<typeof SignaturePolicySchema>;

const RABBITMQ_OVERRIDES = ['servers', 'username', 'password', 'vhost', 'queue', 'exchange', 'routingKey'] as const;

/** `routingKey` → `ROUTING_KEY`. */
const envName = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();

/**
 * Environment variables that override the file, for deployment. Temporal's keep Temporal's names;
 * the broker's are `SNF_VMCATCHER_RABBITMQ_<KEY>` (SERVERS, USERNAME, PASSWORD, VHOST, QUEUE,
 * EXCHANGE, ROUTING_KEY).
 */
export const ENV_OVERRIDES: ReadonlyArray<{ env: string; key: string; list?: boolean }> = [
  ...['address', 'namespace', 'apiKey', 'taskQueue'].map((key) => ({
    env: `TEMPORAL_${envName(key)}`,
    key: `temporal.${key}`,
  })),
  ...RABBITMQ_OVERRIDES.map((key) => ({
    env: `SNF_VMCATCHER_RABBITMQ_${envName(key)}`,
    key: `rabbitmq.${key}`,
    list: key === 'servers' || undefined,
  })),
  { env: 'SNF_VMCATCHER_WORKING_FOLDER', key: 'worker.workingFolder' },
  { env: 'SNF_VMCATCHER_SPOOL_FOLDER', key: 'spool.folder' },
  { env: 'SNF_VMCATCHER_KAMAKI', key: 'synnefo.kamaki' },
  { env: 'SNF_VMCATCHER_SNF_MKIMAGE', key: 'synnefo.snfMkimage' },
  { env: 'SNF_VMCATCHER_WORKER_METRICS_PORT', key: 'worker.metricsPort' },
  { env: 'SNF_VMCATCHER_WORKER_PRODUCT_METRICS_PORT', key: 'worker.productMetricsPort' },
  { env: 'SNF_VMCATCHER_BRIDGE_METRICS_PORT', key: 'bridge.metricsPort' },
];

/** Keys whose values are secrets: redacted wherever a config is shown or logged. */
const SECRET_KEYS = ['rabbitmq.password', 'temporal.apiKey', 'security.credentials'] as const;
export const REDACTED = '***redacted***';

interface LoadOptions {
  /** Path given with -conf; when absent, SNF_VMCATCHER_CONF or built-in defaults. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Overrides from the command line (e.g. -working-folder), applied last. */
  overrides?: Record<string, unknown>;
}

interface LoadedConfig {
  config: Config;
  /** The file the configuration came from, if any. */
  source?: string;
}

export async function loadConfig(opts: LoadOptions = {}): Promise<LoadedConfig> {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.SNF_VMCATCHER_CONF;
  let raw: Record<string, unknown> = {};
  let source: string | undefined;
  if (file) {
    source = path.resolve(file);
    raw = await readConfigFile(source);
  }
  for (const { env: name, key, list } of ENV_OVERRIDES) {
    const value = env[name];
    if (value !== undefined && value !== '') {
      setPath(
        raw,
        key,
        list
          ? value
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : value,
      );
    }
  }
  for (const [key, value] of Object.entries(opts.overrides ?? {})) {
    if (value !== undefined) setPath(raw, key, value);
  }
  return { config: parseConfig(raw, source ?? '(defaults and environment)'), source };
}

/** Validates an already-read configuration tree; errors name the key and where it came from. */
export function parseConfig(raw: unknown, origin: string): Config {
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    const first = result.error.issues[0];
    const key = first.path.join('.') || '(root)';
    throw new ConfigError(`${origin}: invalid configuration key '${key}': ${first.message}`, { key, file: origin });
  }
  return result.data;
}

async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  try {
    await access(file);
  } catch {
    throw new ConfigError(`${file}: configuration file not found`, { file });
  }
  let parsed: unknown;
  try {
    if (file.endsWith('.json')) {
      parsed = JSON.parse(await readFile(file, 'utf8'));
    } else {
      // As the original: anything but .json is HOCON, whatever its extension (.conf, .sample…).
      // Strict mode keeps values as written (no guessing "1.0" into a number).
      parsed = await hocon.parse({ text: await readFile(file, 'utf8'), strict: true });
    }
  } catch (err) {
    throw new ConfigError(`${file}: cannot parse configuration: ${(err as Error).message}`, { file });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`${file}: configuration must be an object`, { file });
  }
  return parsed as Record<string, unknown>;
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
}

/** A deep copy of the configuration with every secret replaced, for show-conf and logs. */
export function redactConfig(config: Config): Config {
  const copy = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
  for (const key of SECRET_KEYS) {
    const [section, name] = key.split('.');
    const value = copy[section]?.[name];
    if (value === undefined) continue;
    if (typeof value === 'object' && value !== null) {
      copy[section][name] = Object.fromEntries(Object.keys(value).map((k) => [k, REDACTED]));
    } else {
      copy[section][name] = REDACTED;
    }
  }
  return copy as unknown as Config;
}

/** Values that must never appear in output: used by the logger and error formatting. */
export function secretValues(config: Config): string[] {
  const values = [config.rabbitmq.password, config.temporal.apiKey, ...literalCredentials(config)];
  // Very short secrets (like the default "guest") would redact ordinary words; they are not secret anyway.
  return values.filter((v): v is string => typeof v === 'string' && v.length >= 6);
}

export function hostTaskQueue(config: Config): string {
  return config.worker.hostTaskQueue ?? `${config.temporal.taskQueue}-${os.hostname()}`;
}

export function deadLetterQueue(rabbit: RabbitConfig): string {
  return rabbit.deadLetterQueue ?? `${rabbit.queue}.dead`;
}

/** The host's control queue (slots and liveness), beside its file-step queue. */
export function hostControlQueue(config: Config): string {
  return `${hostTaskQueue(config)}-control`;
}
