import { access, constants, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { Command, Option } from 'clipanion';
import { execa } from 'execa';
import * as t from 'typanion';
import { request } from 'undici';
import { openBroker } from '../../bridge/broker.js';
import { missingSearchAttributes, searchAttributesAdvice } from '../../bridge/messages.js';
import { keystoneCredential } from '../../clouds/glance/session.js';
import { errorText, KeystoneSession } from '../../clouds/glance/keystone.js';
import { Kamaki } from '../../clouds/synnefo/kamaki.js';
import { deadLetterQueue, type Config, type RegistrySubscription, type Subscription } from '../../core/config.js';
import { resolveCredential } from '../../core/credentials.js';
import { basicAuth, createDispatcher, httpGet, redact } from '../../core/http.js';
import { createLogger, scrubSecrets, type Logger } from '../../core/logging.js';
import { temporalConnectionOptions } from '../../core/temporal-client.js';
import { REGISTER_WORKFLOW, SEARCH_ATTRIBUTES, type ImageRequest } from '../../core/workflow-contract.js';
import { diskPolicy, filesystemSpace, reserveOf } from '../../activities/disk.js';
import { APPDB_TOKEN_PASSWORD } from '../../image-lists/fetch.js';
import { RegistryClient, resolveRegistryLogin } from '../../oci/client.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

/** What each service needs; `doctor` alone checks them all. */
const SERVICES = ['worker', 'bridge', 'producer'] as const;
type Service = (typeof SERVICES)[number];

/** The checks, in the order they run (the order a person fixes things in). */
const PARTS = [
  'rabbitmq',
  'spool',
  'temporal',
  'clouds',
  'ca',
  'working-folder',
  'free-space',
  'snf-mkimage',
  'subscriptions',
  'clock',
] as const;
type Part = (typeof PARTS)[number];

/**
 * What keeps each service from working at all, so its unit does not start without it. A tight
 * disk, a list host that is away or stale CRLs do not: images wait for disk, syncs retry and
 * fail visibly, and a worker that did not start would not register queued images or expire
 * anything either. `doctor` without --for reports those too.
 */
const NEEDS: Record<Service, readonly Part[]> = {
  worker: ['temporal', 'clouds', 'working-folder', 'snf-mkimage', 'clock'],
  bridge: ['rabbitmq', 'temporal', 'clock'],
  producer: ['rabbitmq', 'spool', 'ca', 'clock'],
};

interface CheckResult {
  check: string;
  /** `skip`: not needed with this configuration; never fails the run. */
  outcome: 'ok' | 'fail' | 'skip';
  detail: string;
  /** What the operator does about a failure. */
  fix?: string;
}

const MARK: Record<CheckResult['outcome'], string> = { ok: '✔', fail: '✘', skip: '–' };

/** Each check gives up after this long, so a host that swallows packets cannot hang the health check. */
const CHECK_TIMEOUT_MS = 20_000;
/** How far this host's clock may be from the servers' before signatures, tokens and timers go wrong. */
const CLOCK_TOLERANCE_MS = 60_000;
/** How far back the working folder's check looks for the largest image registered. */
const RECENT_DAYS = 30;
const RECENT_REGISTRATIONS = 20;

const ok = (check: string, detail: string): CheckResult => ({ check, outcome: 'ok', detail });
const skip = (check: string, detail: string): CheckResult => ({ check, outcome: 'skip', detail });
const fail = (check: string, detail: string, fix: string): CheckResult => ({ check, outcome: 'fail', detail, fix });

function message(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}

function withTimeout<T>(what: string, work: Promise<T>, ms = CHECK_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function gib(bytes: number): string {
  return bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/** A server's clock, read from an HTTP Date header, against this host's at the moment of the answer. */
interface ClockReading {
  from: string;
  skewMs: number;
}

function dateReading(from: string, header: string | string[] | undefined, sentAt: number): ClockReading | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  const server = value ? Date.parse(value) : NaN;
  if (Number.isNaN(server)) return undefined;
  // The header has whole seconds: compare with the middle of the request, rounded the same way.
  const local = Math.floor((sentAt + Date.now()) / 2 / 1000) * 1000;
  return { from, skewMs: local - server };
}

/**
 * Runs the checks one after the other (their order is the order a person fixes things in) and
 * collects what each found. Every check catches its own failures: one broken part never hides
 * the state of the others.
 */
class Doctor {
  readonly clock: ClockReading[] = [];

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  async rabbitmq(): Promise<CheckResult[]> {
    const rabbit = this.config.rabbitmq;
    const name = 'RabbitMQ';
    try {
      const session = await withTimeout('RabbitMQ', openBroker(rabbit, { connectionName: 'snf-vmcatcher-doctor' }));
      try {
        const queue = await session.channel.checkQueue(rabbit.queue);
        const dead = await session.channel.checkQueue(deadLetterQueue(rabbit));
        return [
          ok(
            name,
            `logged in to ${session.server} as ${rabbit.username} (vhost ${rabbit.vhost}); exchange '${rabbit.exchange}', ` +
              `queue '${rabbit.queue}' (${queue.messageCount} waiting) and '${dead.queue}' (${dead.messageCount} dead letters) declared`,
          ),
        ];
      } finally {
        await session.close();
      }
    } catch (err) {
      const text = message(err);
      const login = /access refused|ACCESS_REFUSED|403|authenticat/i.test(text);
      return [
        fail(
          name,
          text,
          login
            ? 'check rabbitmq.username and rabbitmq.password (SNF_VMCATCHER_RABBITMQ_PASSWORD) and the user’s permissions on the vhost'
            : 'start RabbitMQ, or check rabbitmq.servers and the firewall between this host and the broker',
        ),
      ];
    }
  }

  async spool(): Promise<CheckResult[]> {
    const folder = this.config.spool.folder;
    // Created as the producer creates it at its first spooled event.
    const result = await writableFolder(folder, 0o750);
    return result
      ? [fail('spool folder', `${folder}: ${result}`, 'create it, owned by the user vmcatcher runs the hook as')]
      : [ok('spool folder', `${folder} is writable (events wait here while the broker is away)`)];
  }

  async temporal(): Promise<CheckResult[]> {
    const temporal = this.config.temporal;
    let connection: Connection | undefined;
    try {
      try {
        connection = await withTimeout(
          'Temporal',
          Connection.connect({ ...temporalConnectionOptions(temporal), connectTimeout: 10_000 }),
        );
        await connection.withDeadline(Date.now() + 10_000, () => connection!.healthService.check({}));
      } catch (err) {
        return [
          fail(
            'Temporal server',
            `cannot reach ${temporal.address}: ${message(err)}`,
            'start the Temporal server, or check temporal.address (TEMPORAL_ADDRESS), temporal.tls and temporal.apiKey',
          ),
        ];
      }
      const results = [ok('Temporal server', `${temporal.address} answers`)];
      const client = new Client({ connection, namespace: temporal.namespace });
      try {
        await connection.withDeadline(Date.now() + 10_000, () =>
          connection!.workflowService.describeNamespace({ namespace: temporal.namespace }),
        );
      } catch (err) {
        results.push(
          fail(
            'Temporal namespace',
            `'${temporal.namespace}': ${message(err)}`,
            `create it (\`temporal operator namespace create --namespace ${temporal.namespace}\`) or set temporal.namespace (TEMPORAL_NAMESPACE)`,
          ),
        );
        return results;
      }
      results.push(ok('Temporal namespace', `'${temporal.namespace}' exists`));
      const missing = await missingSearchAttributes(client, temporal.namespace, 10_000);
      results.push(
        missing.length === 0
          ? ok('search attributes', SEARCH_ATTRIBUTES.map(({ name }) => name).join(', '))
          : fail(
              'search attributes',
              `the namespace '${temporal.namespace}' lacks ${missing.join(', ')}`,
              searchAttributesAdvice(temporal.namespace, missing, 'workflow starts would be refused'),
            ),
      );
      return results;
    } catch (err) {
      return [fail('Temporal', message(err), 'see the Temporal server’s log')];
    } finally {
      await connection?.close().catch(() => undefined);
    }
  }

  async clouds(): Promise<CheckResult[]> {
    const cloud = this.config.cloud;
    if (cloud.type === 'glance') return [await this.glance(cloud)];
    const names = new Set<string>();
    if (this.config.synnefo.cloud) names.add(this.config.synnefo.cloud);
    for (const sub of [...this.config.subscriptions, ...this.config.registrySubscriptions])
      if (sub.cloud) names.add(sub.cloud);
    if (names.size === 0)
      return [
        fail(
          'Synnefo cloud',
          'no kamaki cloud is configured (synnefo.cloud)',
          'set synnefo.cloud to the cloud of ~/.kamakirc images are registered in',
        ),
      ];
    // kamaki is killed when the check gives up, not after worker.toolTimeoutMs (an hour).
    const bounded = { ...this.config, worker: { ...this.config.worker, toolTimeoutMs: CHECK_TIMEOUT_MS } };
    const results: CheckResult[] = [];
    for (const name of names) {
      const check = `Synnefo cloud '${name}'`;
      try {
        const account = await withTimeout('kamaki', new Kamaki(bounded, this.log, name).accountId());
        results.push(ok(check, `kamaki user info: account ${account}`));
      } catch (err) {
        results.push(
          fail(
            check,
            message(err),
            `check synnefo.kamaki (${this.config.synnefo.kamaki}) and the cloud's url and token in the service user's ~/.kamakirc (\`kamaki user info --cloud ${name}\`)`,
          ),
        );
      }
    }
    return results;
  }

  private async glance(glance: Extract<Config['cloud'], { type: 'glance' }>): Promise<CheckResult> {
    const check = `Glance cloud '${glance.name}'`;
    try {
      const session = new KeystoneSession({
        authUrl: glance.authUrl,
        credential: await keystoneCredential(this.config, glance),
        region: glance.region,
        interface: glance.interface,
        timeoutMs: CHECK_TIMEOUT_MS,
      });
      const token = await withTimeout('Keystone', session.token());
      const endpoint = await session.endpoint('image');
      const url = `${endpoint}/v2/images?limit=1`;
      const sentAt = Date.now();
      const res = await withTimeout(
        'Glance',
        request(url, {
          headers: { 'x-auth-token': token, accept: 'application/json' },
          headersTimeout: CHECK_TIMEOUT_MS,
        }),
      );
      const body = await res.body.text();
      const reading = dateReading(new URL(endpoint).host, res.headers.date, sentAt);
      if (reading) this.clock.push(reading);
      if (res.statusCode !== 200)
        return fail(
          check,
          `a Keystone token, but the image endpoint ${redact(endpoint)} answered HTTP ${res.statusCode}: ${errorText(body)}`,
          'check the image service in the Keystone catalog (cloud.region, cloud.interface) and that glance-api runs',
        );
      return ok(
        check,
        `a Keystone token from ${redact(session.url)} for project ${await session.projectId()}; images at ${redact(endpoint)}`,
      );
    } catch (err) {
      return fail(
        check,
        message(err),
        `check cloud.authUrl, cloud.applicationCredentialId (or username and project) and the secret of security.credentials.${glance.credential}`,
      );
    }
  }

  async ca(): Promise<CheckResult[]> {
    const { caPath, crlCheck, signaturePolicy } = this.config.security;
    const check = 'CA folder';
    // Without subscriptions, only lists given on the command line are verified: needed when they must be.
    const needed = signaturePolicy === 'require' || this.config.subscriptions.length > 0;
    let info;
    try {
      info = await stat(caPath);
    } catch {
      return needed
        ? [
            fail(
              check,
              `${caPath} does not exist (security.caPath)`,
              'install the IGTF trust anchors (ca-policy-egi-core) and fetch-crl, or point security.caPath at them',
            ),
          ]
        : [skip(check, `${caPath} does not exist; no subscription, and security.signaturePolicy = ${signaturePolicy}`)];
    }
    if (!info.isDirectory()) return [ok(check, `${caPath} is a single CA file (no CRLs checked)`)];
    const files = await readdir(caPath);
    const certificates = files.filter((f) => /^[0-9a-f]{8}\.\d+$/.test(f));
    const crls = files.filter((f) => /^[0-9a-f]{8}\.r\d+$/.test(f));
    if (certificates.length === 0)
      return [
        fail(
          check,
          `${caPath} holds no hashed CA certificates (<hash>.0)`,
          'install the IGTF trust anchors (ca-policy-egi-core), or run `openssl rehash` on the folder',
        ),
      ];
    if (crlCheck === 'off')
      return [ok(check, `${certificates.length} CA certificates; CRLs are not checked (security.crlCheck = off)`)];
    if (crls.length === 0)
      return [
        fail(
          check,
          `${caPath}: ${certificates.length} CA certificates but no CRLs (<hash>.r0), so a revoked signer would be accepted`,
          'run fetch-crl (and its cron job), or set security.crlCheck = off to verify without CRLs',
        ),
      ];
    const now = Date.now();
    const stale: string[] = [];
    for (const crl of crls) {
      const out = await execa('openssl', ['crl', '-in', path.join(caPath, crl), '-noout', '-nextupdate'], {
        reject: false,
      });
      const next = /nextUpdate=(.+)/.exec(String(out.stdout))?.[1];
      const when = next ? Date.parse(next) : NaN;
      if (out.exitCode !== 0 || Number.isNaN(when)) stale.push(`${crl} (unreadable)`);
      else if (when <= now) stale.push(`${crl} (expired ${new Date(when).toISOString()})`);
    }
    if (stale.length > 0)
      return [
        fail(
          check,
          `${stale.length} of ${crls.length} CRLs are not fresh: ${stale.slice(0, 5).join(', ')}${stale.length > 5 ? ', …' : ''}`,
          'run fetch-crl (and check its cron job); an expired CRL makes every signature of that CA fail',
        ),
      ];
    return [
      ok(check, `${certificates.length} CA certificates, ${crls.length} CRLs, all with nextUpdate in the future`),
    ];
  }

  async workingFolder(): Promise<CheckResult[]> {
    const folder = this.config.worker.workingFolder;
    const check = 'working folder';
    // Created as the worker creates it at its first image, so a fresh install passes.
    const problem = await writableFolder(folder, 0o700);
    return problem
      ? [fail(check, `${folder}: ${problem}`, 'make it writable by the service user, or set worker.workingFolder')]
      : [ok(check, `${folder} is writable`)];
  }

  async freeSpace(): Promise<CheckResult[]> {
    const folder = this.config.worker.workingFolder;
    const check = 'free space';
    let space;
    try {
      space = await filesystemSpace(folder);
    } catch (err) {
      return [fail(check, `${folder}: ${message(err)}`, 'create worker.workingFolder')];
    }
    const { free, total } = space;
    const reserve = reserveOf(diskPolicy(this.config), total);
    const usable = free - reserve;
    const largest = await this.largestRecentImage();
    const need = largest?.bytes ?? 0;
    const against = largest
      ? `the largest image registered in the last ${RECENT_DAYS} days (${largest.name}, ${gib(largest.bytes)} as published)`
      : `no registration of the last ${RECENT_DAYS} days gives a size to compare with`;
    const detail = `${gib(free)} free of ${gib(total)}, ${gib(reserve)} kept in reserve (worker.diskReserveBytes/Percent); against ${against}`;
    if (usable <= 0 || usable < need)
      return [
        fail(
          check,
          `${folder}: ${detail}: ${usable <= 0 ? 'nothing left above the reserve' : `${gib(usable)} usable is not enough`}`,
          'free space on that filesystem (old images, other users), or move worker.workingFolder to a larger one; images wait (stage waiting-for-disk) until then',
        ),
      ];
    return [ok(check, `${folder}: ${detail}`)];
  }

  /** The largest `hv:size` among recent registrations: what the next one of the same list likely needs. */
  private async largestRecentImage(): Promise<{ name: string; bytes: number } | undefined> {
    const temporal = this.config.temporal;
    let connection: Connection | undefined;
    try {
      connection = await withTimeout('Temporal', Connection.connect(temporalConnectionOptions(temporal)));
      const client = new Client({ connection, namespace: temporal.namespace });
      const since = new Date(Date.now() - RECENT_DAYS * 86_400_000).toISOString();
      let largest: { name: string; bytes: number } | undefined;
      let seen = 0;
      for await (const wf of client.workflow.list({
        query: `WorkflowType = '${REGISTER_WORKFLOW}' AND StartTime > '${since}'`,
      })) {
        if (++seen > RECENT_REGISTRATIONS) break;
        const history = await connection.workflowService.getWorkflowExecutionHistory({
          namespace: temporal.namespace,
          execution: { workflowId: wf.workflowId, runId: wf.runId },
          maximumPageSize: 1,
        });
        const payload = history.history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
        if (!payload) continue;
        const input = defaultPayloadConverter.fromPayload<ImageRequest>(payload);
        const bytes = input?.event?.size;
        if (typeof bytes === 'number' && bytes > (largest?.bytes ?? 0))
          largest = { name: input.event.title ?? input.event.imageId ?? wf.workflowId, bytes };
      }
      return largest;
    } catch (err) {
      this.log.debug({ err: message(err) }, 'could not read recent registrations for their sizes');
      return undefined;
    } finally {
      await connection?.close().catch(() => undefined);
    }
  }

  async snfMkimage(): Promise<CheckResult[]> {
    const { synnefo, cloud } = this.config;
    const check = 'snf-mkimage';
    if (cloud.type !== 'synnefo') return [skip(check, `not used by a Glance cloud`)];
    if (!synnefo.prepare) return [skip(check, 'images are not prepared (synnefo.prepare = false)')];
    if (synnefo.sudo.length === 0) {
      const found = await execa('sh', ['-c', 'command -v "$0"', synnefo.snfMkimage], { reject: false });
      return found.exitCode === 0
        ? [ok(check, `${String(found.stdout).trim()}, run without sudo (synnefo.sudo = [])`)]
        : [fail(check, `${synnefo.snfMkimage} is not found`, 'install snf-image-creator, or set synnefo.snfMkimage')];
    }
    if (path.basename(synnefo.sudo[0]) !== 'sudo')
      return [skip(check, `run through ${synnefo.sudo.join(' ')}, which this check cannot ask`)];
    // `sudo -l COMMAND` answers whether the command is allowed without running it; -n never prompts.
    const asked = await execa(synnefo.sudo[0], ['-n', '-l', synnefo.snfMkimage], { reject: false });
    return asked.exitCode === 0
      ? [ok(check, `sudo -n allows ${String(asked.stdout).trim() || synnefo.snfMkimage}`)]
      : [
          fail(
            check,
            `sudo -n does not allow ${synnefo.snfMkimage}: ${String(asked.stderr).trim() || asked.shortMessage}`,
            'add the sudoers line of docs/operations.md for the service user (NOPASSWD for snf-mkimage only), or set synnefo.prepare = false',
          ),
        ];
  }

  async subscriptions(): Promise<CheckResult[]> {
    const lists = this.config.subscriptions;
    const registries = this.config.registrySubscriptions;
    if (lists.length === 0 && registries.length === 0) return [skip('subscriptions', 'none configured')];
    const results: CheckResult[] = [];
    for (const sub of lists) results.push(await this.imageList(sub));
    for (const sub of registries) results.push(await this.registry(sub));
    return results;
  }

  /** A conditional GET (If-Modified-Since now): an unchanged list costs no body; the list is not synced. */
  private async imageList(sub: Subscription): Promise<CheckResult> {
    const url = new URL(sub.url);
    const check = `subscription ${redact(url)}`;
    if (url.protocol === 'file:') {
      try {
        await access(url, constants.R_OK);
        return ok(check, 'the file is readable');
      } catch (err) {
        return fail(check, message(err), 'check the path and security.allowedFileFolders');
      }
    }
    const dispatcher = createDispatcher({
      connectTimeoutMs: this.config.security.connectTimeoutMs,
      readTimeoutMs: this.config.security.readTimeoutMs,
    });
    try {
      // As a sync sends it: the subscription's credential, only to the list's host (httpGet drops it on a redirect elsewhere).
      const token = sub.credential ? await resolveCredential(this.config, sub.credential) : undefined;
      const sentAt = Date.now();
      const response = await withTimeout(
        redact(url),
        httpGet(url, {
          dispatcher,
          redirects: { maxRedirects: this.config.security.maxRedirects },
          headers: { 'if-modified-since': new Date().toUTCString() },
          credentialHeaders: token ? { authorization: basicAuth(token, APPDB_TOKEN_PASSWORD) } : undefined,
        }),
      );
      await response.body.dump().catch(() => undefined);
      const reading = dateReading(url.host, response.headers.date, sentAt);
      if (reading) this.clock.push(reading);
      return ok(
        check,
        `HTTP ${response.status}${sub.credential ? ` with credential '${sub.credential}'` : ''}${response.url.href !== url.href ? ` (from ${redact(response.url)})` : ''}`,
      );
    } catch (err) {
      return fail(
        check,
        message(err),
        sub.credential
          ? `check the list's URL and the secret of security.credentials.${sub.credential}`
          : "check the list's URL, and whether it needs a credential",
      );
    } finally {
      // Destroyed, not closed: a request the check gave up on is not waited for.
      await dispatcher.destroy().catch(() => undefined);
    }
  }

  /** The registry's API root with the subscription's login: what every listing of the project starts with. */
  private async registry(sub: RegistrySubscription): Promise<CheckResult> {
    const check = `subscription ${sub.registry} project ${sub.project}`;
    let client: RegistryClient | undefined;
    try {
      const login = sub.credential ? await resolveRegistryLogin(this.config, sub.credential) : undefined;
      client = new RegistryClient({ registry: new URL(sub.registry), login, security: this.config.security });
      const sentAt = Date.now();
      const response = await withTimeout(sub.registry, client.get('v2/'));
      await response.body.dump().catch(() => undefined);
      const reading = dateReading(client.name, response.headers.date, sentAt);
      if (reading) this.clock.push(reading);
      return ok(check, `HTTP ${response.status}${sub.credential ? ` with credential '${sub.credential}'` : ''}`);
    } catch (err) {
      return fail(
        check,
        message(err),
        sub.credential
          ? `check the registry URL and the "user:password" of security.credentials.${sub.credential}`
          : 'check the registry URL, and whether the project needs a credential',
      );
    } finally {
      await client?.close();
    }
  }

  async clockCheck(): Promise<CheckResult[]> {
    const check = 'clock';
    const webUi = this.config.temporal.webUiUrl;
    try {
      const sentAt = Date.now();
      const res = await withTimeout('Web UI', request(webUi, { method: 'HEAD', headersTimeout: 10_000 }), 10_000);
      await res.body.dump().catch(() => undefined);
      const reading = dateReading(`${new URL(webUi).host} (temporal.webUiUrl)`, res.headers.date, sentAt);
      if (reading) this.clock.push(reading);
    } catch (err) {
      this.log.debug({ err: message(err) }, 'the Web UI did not answer for the clock check');
    }
    if (this.clock.length === 0)
      return [skip(check, 'no server answered with a Date header to compare with (the Web UI, Keystone, the lists)')];
    const worst = this.clock.reduce((a, b) => (Math.abs(b.skewMs) > Math.abs(a.skewMs) ? b : a));
    const off = Math.round(worst.skewMs / 1000);
    const against = [...new Set(this.clock.map((r) => r.from))].join(', ');
    if (Math.abs(worst.skewMs) > CLOCK_TOLERANCE_MS)
      return [
        fail(
          check,
          `this host's clock is ${Math.abs(off)} s ${off > 0 ? 'ahead of' : 'behind'} ${worst.from}'s`,
          'synchronise it (chrony or systemd-timesyncd): signatures, CRLs, tokens and Temporal timers depend on it',
        ),
      ];
    return [ok(check, `within ${CLOCK_TOLERANCE_MS / 1000} s of ${against} (at most ${Math.abs(off)} s apart)`)];
  }
}

/** Why `folder` cannot take a file, or undefined when it can (a file is written and removed). */
async function writableFolder(folder: string, mode: number): Promise<string | undefined> {
  try {
    await mkdir(folder, { recursive: true, mode });
    const probe = path.join(folder, `.doctor-${process.pid}`);
    await writeFile(probe, 'ok');
    await rm(probe, { force: true });
    return undefined;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return e.code === 'ENOENT' ? 'does not exist' : `not writable (${e.code ?? e.message})`;
  }
}

export class DoctorCommand extends ConfiguredCommand {
  static override paths = [['doctor']];
  static override usage = Command.Usage({
    description: 'Check that everything the service needs is there and answers',
    details:
      'Checks, one line each with ✔ or ✘ and what to do: the configuration; RabbitMQ (login, topology); the Temporal server, its namespace and the search attributes; every cloud (Synnefo: `kamaki user info`; Glance: a Keystone token and the image endpoint); the CA folder and its CRLs; the working folder (writable, free space against the largest recent image); `sudo -n snf-mkimage`; every subscription (reachable with its credential, not synced); the spool folder; the clock. `--for` checks only what one service needs (the systemd units run it before starting). Exit 0 when every needed check passes, 1 when one fails, 2 when the configuration does not load.',
    examples: [
      ['Check everything', '$0 doctor --conf /etc/snf-vmcatcher/application.conf'],
      [
        'Check what a worker needs (its ExecStartPre)',
        '$0 doctor --for worker --conf /etc/snf-vmcatcher/application.conf',
      ],
    ],
  });

  for = Option.String('--for', {
    validator: t.isEnum(SERVICES),
    description: `Only what this service needs (${SERVICES.join(', ')})`,
  });
  json = Option.Boolean('--json', false, { description: 'One JSON object: every check and its outcome' });

  async run(): Promise<number> {
    const results: CheckResult[] = [];
    const show = (list: CheckResult[]) => {
      results.push(...list);
      if (!this.json) for (const r of list) this.print(r);
    };
    let config: Config;
    try {
      config = await this.config();
      // Credentials are read when used; an unreadable one is a configuration mistake, found here.
      for (const name of Object.keys(config.security.credentials)) await resolveCredential(config, name);
      show([ok('configuration', this.configName)]);
    } catch (err) {
      show([
        fail(
          'configuration',
          message(err),
          'fix the key it names (`snf-vmcatcher show-conf` shows the effective values)',
        ),
      ]);
      return this.finish(results, EXIT.usage);
    }
    // The checks' own tool runs log at debug; the health check's lines are its output.
    const log = createLogger('doctor', { verbose: this.verbose, destination: this.context.stderr });
    if (!this.verbose) log.level = 'warn';
    const doctor = new Doctor(config, log);
    const parts = new Set<Part>(this.for ? NEEDS[this.for] : PARTS);
    const steps: Array<[Part, () => Promise<CheckResult[]>]> = [
      ['rabbitmq', () => doctor.rabbitmq()],
      ['spool', () => doctor.spool()],
      ['temporal', () => doctor.temporal()],
      ['clouds', () => doctor.clouds()],
      ['ca', () => doctor.ca()],
      ['working-folder', () => doctor.workingFolder()],
      ['free-space', () => doctor.freeSpace()],
      ['snf-mkimage', () => doctor.snfMkimage()],
      ['subscriptions', () => doctor.subscriptions()],
      ['clock', () => doctor.clockCheck()],
    ];
    for (const [part, check] of steps) if (parts.has(part)) show(await check());
    return this.finish(results, results.some((r) => r.outcome === 'fail') ? EXIT.failed : EXIT.ok);
  }

  private print(r: CheckResult): void {
    this.out(scrubSecrets(`${MARK[r.outcome]} ${r.check}: ${r.detail}`));
    if (r.fix) this.out(scrubSecrets(`    → ${r.fix}`));
  }

  private finish(results: CheckResult[], code: number): number {
    if (this.json)
      this.out(scrubSecrets(JSON.stringify({ ok: code === EXIT.ok, for: this.for ?? 'all', checks: results })));
    else if (code !== EXIT.ok)
      this.say.error(`doctor: ${results.filter((r) => r.outcome === 'fail').length} check(s) failed`);
    return code;
  }
}
