import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import type { Config } from './config.js';
import { ConfigError } from './errors.js';
import { registerSecrets } from './logging.js';

/**
 * A named secret (an AppDB token, a registry password): written in the configuration, or, so
 * that it sits in neither the configuration file nor any process's argv, read from a file or
 * an environment variable when it is needed.
 */
export const CredentialSchema = z.union([
  z.string().min(1),
  z.object({ file: z.string().min(1) }).strict(),
  z.object({ env: z.string().min(1) }).strict(),
]);

/**
 * Which credential a download uses, by the image's origin and, if the rule names one, its image
 * list (first match wins). A rule always names the origin its token goes to (`https://host[:port]`:
 * scheme, host and port): the image list id and the URL of a queued event are only as trustworthy
 * as whoever may publish to the queue, so a rule keyed by the list alone would send the token to
 * any host an event names, and one keyed by the host alone to any port or to plain http on it.
 * Tokens go over verified TLS only: an `http:` origin is refused, and a download with
 * `--insecure-ssl` gets no token from a rule.
 *
 * Older configurations name a bare `host`: it means `https://<host>` (port 443). A `host` that
 * carries a scheme or a port, or a rule naming both `host` and `origin`, is ambiguous and refused.
 */
const RuleInputSchema = z
  .object({
    /** `https://host[:port]`: the only origin the credential is sent to. */
    origin: z.string().min(1).optional(),
    /** Older spelling: a bare host name, meaning `https://<host>` on port 443. */
    host: z.string().min(1).optional(),
    /** dc:identifier of the image list the image belongs to (further narrows the rule). */
    imageList: z.string().min(1).optional(),
    credential: z.string().min(1),
  })
  .strict();

export const CredentialRuleSchema = RuleInputSchema.transform((rule, ctx) => {
  const refuse = (path: 'origin' | 'host', message: string) => {
    ctx.addIssue({ code: 'custom', path: [path], message });
    return z.NEVER;
  };
  if (rule.origin !== undefined && rule.host !== undefined)
    return refuse('host', 'name either origin = "https://host[:port]" or the older host, not both');
  const origin = rule.origin !== undefined ? ruleOrigin(rule.origin) : legacyHostOrigin(rule.host);
  if (typeof origin !== 'string') return refuse(rule.host !== undefined ? 'host' : 'origin', origin.problem);
  return {
    origin,
    ...(rule.imageList === undefined ? {} : { imageList: rule.imageList }),
    credential: rule.credential,
  };
});

/** The secret of credential `name`, registered so that no log line can print it. */
export async function resolveCredential(config: Config, name: string): Promise<string> {
  const key = `security.credentials.${name}`;
  const entry = config.security.credentials[name];
  if (entry === undefined) throw new ConfigError(`credential '${name}' is not defined (${key}) on this host`, { key });
  let secret: string;
  if (typeof entry === 'string') {
    secret = entry;
  } else if ('file' in entry) {
    try {
      secret = (await readFile(entry.file, 'utf8')).trim();
    } catch (err) {
      throw new ConfigError(
        `${key}: cannot read ${entry.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { key },
      );
    }
  } else {
    secret = process.env[entry.env] ?? '';
  }
  if (!secret) throw new ConfigError(`${key} is empty`, { key });
  registerSecrets([secret]);
  return secret;
}

/** The origin a rule's `origin` names, normalised (`https://Host:443/` → `https://host`), or why it cannot be one. */
function ruleOrigin(value: string): string | { problem: string } {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return { problem: `'${value}' is not an origin: write "https://host" or "https://host:port"` };
  }
  if (url.protocol === 'http:')
    return { problem: `'${value}': a credential is never sent over plain http; the origin must be https://` };
  if (url.protocol !== 'https:') return { problem: `'${value}': the origin must be https://host[:port]` };
  if (url.username || url.password || url.search || url.hash || url.pathname !== '/')
    return { problem: `'${value}' is not an origin (scheme, host and port only): write "${url.origin}"` };
  return url.origin;
}

/** An older rule's bare `host`: https on port 443. A host with a scheme, a port or a path is ambiguous. */
function legacyHostOrigin(host: string | undefined): string | { problem: string } {
  if (host === undefined)
    return {
      problem:
        'a rule must name the origin the credential is sent to (origin = "https://host[:port]"); a rule with only imageList would send it to any host an event names',
    };
  if (!/^[A-Za-z0-9.-]+$/.test(host) && !/^\[[0-9A-Fa-f:.]+\]$/.test(host))
    return {
      problem: `host '${host}' is ambiguous: a rule's host is a bare host name (meaning https on port 443); for another scheme or port write origin = "https://host:port"`,
    };
  return ruleOrigin(`https://${host}`);
}

/**
 * The credential name the configuration maps an image to (`security.credentialRules`), if any: a
 * rule applies to an https URL on exactly its origin (scheme, host and port), never to plain http,
 * and never when the download skips TLS checks (`insecureTls`).
 */
export function credentialNameFor(
  config: Config,
  image: { url?: string; imageListId?: string; insecureTls?: boolean },
): string | undefined {
  if (image.insecureTls) return undefined;
  let origin: string | undefined;
  try {
    const url = image.url ? new URL(image.url) : undefined;
    origin = url?.protocol === 'https:' ? url.origin : undefined;
  } catch {
    origin = undefined;
  }
  if (origin === undefined) return undefined;
  for (const rule of config.security.credentialRules) {
    const listOk = rule.imageList === undefined || rule.imageList === image.imageListId;
    if (rule.origin === origin && listOk) return rule.credential;
  }
  return undefined;
}

/** Secrets written literally in the configuration (the others are read when needed and registered then). */
export function literalCredentials(config: Config): string[] {
  return Object.values(config.security.credentials).filter((c): c is string => typeof c === 'string');
}
