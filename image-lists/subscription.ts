import { readFile } from 'node:fs/promises';
import { subscriptionKey, type Config, type Endorser, type Subscription } from '../core/config.js';
import { resolveCredential } from '../core/credentials.js';
import { InvalidInputError } from '../core/errors.js';
import { registerSecrets } from '../core/logging.js';
import { normaliseDn, sameDn, type SignerIdentity } from './signature.js';

/**
 * What the configuration says about one image list: the subscription it belongs to, who may
 * sign it, and which token fetches it. Shared by the list commands and the
 * scheduled subscriptions, so both trust and authenticate a list the same way.
 */

/** The environment variable that can carry an image list token, so it is never on a command line. */
export const TOKEN_ENV = 'SNF_VMCATCHER_IMAGE_LIST_TOKEN';

export function findSubscription(
  config: Config,
  url: string | URL,
): { subscription: Subscription; index: number } | undefined {
  const key = subscriptionKey(url);
  const index = config.subscriptions.findIndex((s) => subscriptionKey(s.url) === key);
  return index < 0 ? undefined : { subscription: config.subscriptions[index], index };
}

export interface AuthorisedEndorsers {
  endorsers: Endorser[];
  /** The configuration key they came from, for messages. */
  key: string;
}

/** The subscription's own endorsers when it names any, else `security.endorsers`. */
export function authorisedEndorsers(config: Config, url: string | URL): AuthorisedEndorsers {
  const found = findSubscription(config, url);
  if (found) {
    const { subscription, index } = found;
    const own = [...(subscription.endorser ? [subscription.endorser] : []), ...(subscription.endorsers ?? [])];
    if (own.length > 0)
      return { endorsers: own, key: `subscriptions.${index}.endorser${subscription.endorsers ? 's' : ''}` };
  }
  return { endorsers: config.security.endorsers, key: 'security.endorsers' };
}

/** Why `signer` may not sign this list, or undefined when it is one of the authorised endorsers. */
export function endorserNotAuthorised(
  signer: SignerIdentity,
  authorised: AuthorisedEndorsers,
  url: string,
): string | undefined {
  if (authorised.endorsers.length === 0) {
    return (
      `no endorser is authorised for ${url}: set security.endorsers = [{ dn = "${signer.subject}", ca = "${signer.issuer}" }] ` +
      'or the endorser of its entry in subscriptions once you trust that signer (security.endorserPolicy = warn accepts any signer your CAs vouch for)'
    );
  }
  const ok = authorised.endorsers.some((e) => sameDn(e.dn, signer.subject) && sameDn(e.ca, signer.issuer));
  if (ok) return undefined;
  const names = authorised.endorsers.map((e) => `${normaliseDn(e.dn)} (CA ${normaliseDn(e.ca)})`).join(', ');
  return `signer ${signer.subject} (CA ${signer.issuer}) is not an authorised endorser of this list (${authorised.key}: ${names})`;
}

export interface TokenSources {
  /** `--token`: visible to every user in `ps`; kept for compatibility. */
  token?: string;
  /** `--token-file FILE`. */
  tokenFile?: string;
  /** `--credential NAME`, an entry of security.credentials. */
  credential?: string;
  /** A token written as the URL's user name (the AppDB FAQ form). */
  urlToken?: string;
  env?: NodeJS.ProcessEnv;
}

interface ListToken {
  token?: string;
  /** Where it came from, for a debug line (never the token itself). */
  source?: string;
}

/**
 * The token sent with an image list request. Explicit choices win over ambient ones: the
 * command line (one of --token, --token-file, --credential), then a token in the URL, then
 * $SNF_VMCATCHER_IMAGE_LIST_TOKEN, then the credential of the list's subscription.
 */
export async function resolveListToken(config: Config, url: string | URL, sources: TokenSources): Promise<ListToken> {
  const given = [
    sources.token !== undefined ? '--token' : undefined,
    sources.tokenFile !== undefined ? '--token-file' : undefined,
    sources.credential !== undefined ? '--credential' : undefined,
  ].filter(Boolean);
  if (given.length > 1) throw new InvalidInputError(`give only one of ${given.join(', ')}`);

  if (sources.token !== undefined) return { token: nonEmpty(sources.token, '--token'), source: '--token' };
  if (sources.tokenFile !== undefined)
    return { token: await readTokenFile(sources.tokenFile), source: `--token-file ${sources.tokenFile}` };
  if (sources.credential !== undefined)
    return { token: await resolveCredential(config, sources.credential), source: `credential ${sources.credential}` };
  if (sources.urlToken) return { token: sources.urlToken, source: 'the URL' };
  const fromEnv = sources.env?.[TOKEN_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') {
    registerSecrets([fromEnv.trim()]);
    return { token: fromEnv.trim(), source: `$${TOKEN_ENV}` };
  }
  const found = findSubscription(config, url);
  if (found?.subscription.credential) {
    const name = found.subscription.credential;
    return {
      token: await resolveCredential(config, name),
      source: `credential ${name} (subscriptions.${found.index}.credential)`,
    };
  }
  return {};
}

function nonEmpty(token: string, option: string): string {
  if (token.trim() === '') throw new InvalidInputError(`${option} is empty`);
  return token.trim();
}

async function readTokenFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new InvalidInputError(
      `--token-file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  const token = text.trim();
  if (token === '') throw new InvalidInputError(`--token-file ${file} is empty`);
  if (/\s/.test(token))
    throw new InvalidInputError(`--token-file ${file}: expected one token, found several words or lines`);
  registerSecrets([token]);
  return token;
}
