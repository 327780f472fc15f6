import type { Config } from '../config.js';
import type { Logger } from '../logging.js';
import { openEnvelope, signedContentText } from './envelope.js';
import { fetchImageList, parseImageListUrl } from './fetch.js';
import { parseImageList, type ParsedImageList } from './parse.js';
import { applySignaturePolicy, endorserMismatch, verifySmime, type SignatureOutcome, type SignatureStatus } from './signature.js';

export interface ReadImageListOptions {
  url: string;
  token?: string;
  insecureTls?: boolean;
  security: Config['security'];
  logger: Logger;
  now?: Date;
}

export interface ReadImageList extends ParsedImageList {
  /** The URL as given, credentials removed. */
  url: string;
  /** The JSON text that was verified (or, when policy allowed it, not). */
  json: string;
  signature: SignatureStatus;
}

/**
 * Fetch → open the envelope → verify the signature and apply the policy → parse. The one
 * way every command reads an image list, so they all verify the same way.
 */
export async function readImageList(opts: ReadImageListOptions): Promise<ReadImageList> {
  const { url, token: urlToken } = parseImageListUrl(opts.url);
  const token = opts.token ?? urlToken;
  if (opts.insecureTls) {
    opts.logger.warn({ url: url.href }, `TLS certificate checks are OFF for this image list's host ${url.hostname} (--insecure-ssl); redirects to other hosts are verified`);
  }
  const source = await fetchImageList(url, { token, insecureTls: opts.insecureTls, security: opts.security });
  opts.logger.debug({ url: source.url, from: source.from, bytes: source.bytes.length }, 'image list fetched');

  const envelope = openEnvelope(source.bytes);
  let json = envelope.json;
  let outcome: SignatureOutcome;
  if (envelope.kind === 'plain') {
    outcome = { state: 'unsigned' };
  } else {
    const verification = await verifySmime(source.bytes, { caPath: opts.security.caPath, timeoutMs: opts.security.readTimeoutMs });
    if (verification.verified) {
      // Parse exactly what openssl verified, not our own reading of the MIME parts.
      json = signedContentText(verification.content);
      const declared = parseImageList(json, opts.now).list.endorser;
      outcome = { state: 'verified', signer: verification.signer, endorserProblem: endorserMismatch(verification.signer, declared) };
    } else {
      outcome = { state: 'invalid', reason: verification.reason };
    }
  }
  const signature = applySignaturePolicy(outcome, opts.security.signaturePolicy, opts.security.pinEndorser);
  if (signature.warning) opts.logger.warn({ url: source.url }, signature.warning);
  opts.logger.debug({ url: source.url, signature: signature.status, signer: signature.signer }, 'image list signature checked');

  const parsed = parseImageList(json, opts.now);
  if (parsed.list.expired) opts.logger.warn({ url: source.url, expires: parsed.list.expires }, 'image list has expired (dc:date:expires)');
  if (parsed.list.createdInFuture) opts.logger.warn({ url: source.url, created: parsed.list.created }, 'image list is dated in the future (dc:date:created)');
  return { url: source.url, json, signature, ...parsed };
}
