import type { Config } from '../core/config.js';
import type { Logger } from '../core/logging.js';
import { openEnvelope, signedContentText } from './envelope.js';
import { fetchImageList, parseImageListUrl, type ListValidators } from './fetch.js';
import { parseImageList, type ParsedImageList } from './parse.js';
import {
  applySignaturePolicy,
  endorserMismatch,
  verifySmime,
  type SignatureOutcome,
  type SignatureStatus,
} from './signature.js';
import {
  authorisedEndorsers,
  endorserNotAuthorised,
  resolveListToken,
  type AuthorisedEndorsers,
  type TokenSources,
} from './subscription.js';

interface ReadImageListOptions {
  url: string;
  /** Where the token may come from (command line, environment); the subscription's credential is looked up here. */
  tokens?: Omit<TokenSources, 'urlToken'>;
  insecureTls?: boolean;
  /** The signers authorised for this list, when the caller knows them (a subscription); else the configuration says. */
  endorsers?: AuthorisedEndorsers;
  /** Fetch only if the list changed since these validators (a subscription's last accepted copy). */
  ifChanged?: ListValidators;
  /** Stops the fetch (a sync's cancellation: its run timed out or was cancelled). */
  signal?: AbortSignal;
  config: Config;
  logger: Logger;
  now?: Date;
}

export interface ReadImageList extends ParsedImageList {
  /** The URL as given, credentials removed. */
  url: string;
  /** The JSON text that was verified (or, when policy allowed it, not). */
  json: string;
  signature: SignatureStatus;
  /** The signer's certificate (PEM) when the signature verified and the signer is authorised: kept with an accepted copy. */
  signerPem?: string;
  /** The server's validators, for the next conditional fetch. */
  etag?: string;
  lastModified?: string;
}

/**
 * Fetch → open the envelope → verify the signature, the signer against the declared and the
 * authorised endorsers, and apply the policies → parse. The one way every command reads an
 * image list, so they all trust the same lists.
 */
export async function readImageList(
  opts: ReadImageListOptions & { ifChanged: ListValidators },
): Promise<ReadImageList | undefined>;
export async function readImageList(opts: ReadImageListOptions): Promise<ReadImageList>;
export async function readImageList(opts: ReadImageListOptions): Promise<ReadImageList | undefined> {
  const { security } = opts.config;
  const { url, token: urlToken } = parseImageListUrl(opts.url);
  const { token, source: tokenSource } = await resolveListToken(opts.config, url, { ...opts.tokens, urlToken });
  if (opts.insecureTls) {
    opts.logger.warn(
      { url: url.href },
      `TLS certificate checks are OFF for this image list's host ${url.hostname} (--insecure-ssl); redirects to other hosts are verified`,
    );
  }
  if (tokenSource) opts.logger.debug({ url: url.href, tokenFrom: tokenSource }, 'sending a token to the list host');
  const source = await fetchImageList(url, {
    token,
    insecureTls: opts.insecureTls,
    security,
    ifChanged: opts.ifChanged,
    signal: opts.signal,
  });
  if (!source) {
    opts.logger.debug({ url: url.href }, 'image list not modified since the last accepted copy');
    return undefined;
  }
  opts.logger.debug({ url: source.url, from: source.from, bytes: source.bytes.length }, 'image list fetched');

  const envelope = openEnvelope(source.bytes);
  let json = envelope.json;
  let outcome: SignatureOutcome;
  let signerPem: string | undefined;
  if (envelope.kind === 'plain') {
    outcome = { state: 'unsigned' };
  } else {
    const verification = await verifySmime(source.bytes, {
      caPath: security.caPath,
      crlCheck: security.crlCheck,
      timeoutMs: security.readTimeoutMs,
    });
    if (verification.verified) {
      // Parse exactly what openssl verified, not our own reading of the MIME parts.
      json = signedContentText(verification.content);
      signerPem = verification.signerPem;
      const declared = parseImageList(json, opts.now).list.endorser;
      outcome = {
        state: 'verified',
        signer: verification.signer,
        endorserProblem: endorserMismatch(verification.signer, declared),
        authorisationProblem: endorserNotAuthorised(
          verification.signer,
          opts.endorsers ?? authorisedEndorsers(opts.config, url),
          source.url,
        ),
      };
    } else {
      outcome = { state: 'invalid', reason: verification.reason, signer: verification.signer };
    }
    opts.logger.debug(
      { url: source.url, crlChecked: verification.crlChecked ?? false },
      'signature checked by openssl',
    );
  }
  const signature = applySignaturePolicy(outcome, security);
  if (signature.warning) opts.logger.warn({ url: source.url }, signature.warning);
  opts.logger.debug(
    { url: source.url, signature: signature.status, signer: signature.signer },
    'image list signature checked',
  );

  const parsed = parseImageList(json, opts.now);
  if (parsed.list.expired)
    opts.logger.warn({ url: source.url, expires: parsed.list.expires }, 'image list has expired (dc:date:expires)');
  if (parsed.list.createdInFuture)
    opts.logger.warn(
      { url: source.url, created: parsed.list.created },
      'image list is dated in the future (dc:date:created)',
    );
  return {
    url: source.url,
    json,
    signature,
    signerPem: signature.status === 'verified' ? signerPem : undefined,
    etag: source.etag,
    lastModified: source.lastModified,
    ...parsed,
  };
}
