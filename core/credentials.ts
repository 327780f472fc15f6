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
export type Credential = z.infer<typeof CredentialSchema>;

/**
 * Which credential a download uses, by the image's host and, if the rule names one, its image
 * list (first match wins). A rule always names the host the token goes to: the image list id and
 * the URL of a queued event are only as trustworthy as whoever may publish to the queue, so a
 * rule keyed by the list alone would send the token to any host an event names.
 */
export const CredentialRuleSchema = z
  .object({
    /** Host name of the image URL (exact, case-insensitive). */
    host: z
      .string({
        error: (issue) =>
          issue.input === undefined
            ? 'a rule must name the host the credential is sent to (host = "…"); a rule with only imageList would send it to any host an event names'
            : 'expected a host name',
      })
      .min(1),
    /** dc:identifier of the image list the image belongs to (further narrows the rule). */
    imageList: z.string().min(1).optional(),
    credential: z.string().min(1),
  })
  .strict();
export type CredentialRule = z.infer<typeof CredentialRuleSchema>;

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

/** The credential name the configuration maps an image to (`security.credentialRules`), if any. */
export function credentialNameFor(config: Config, image: { url?: string; imageListId?: string }): string | undefined {
  let host: string | undefined;
  try {
    host = image.url ? new URL(image.url).hostname.toLowerCase() : undefined;
  } catch {
    host = undefined;
  }
  for (const rule of config.security.credentialRules) {
    const hostOk = rule.host.toLowerCase() === host;
    const listOk = rule.imageList === undefined || rule.imageList === image.imageListId;
    if (hostOk && listOk) return rule.credential;
  }
  return undefined;
}

/** Secrets written literally in the configuration (the others are read when needed and registered then). */
export function literalCredentials(config: Config): string[] {
  return Object.values(config.security.credentials).filter((c): c is string => typeof c === 'string');
}
