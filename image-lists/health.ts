import { access, constants } from 'node:fs/promises';
import type { Subscription } from '../core/config.js';
import { resolveCredential } from '../core/credentials.js';
import { fail, failureText, ok, withTimeout, type CheckResult, type HealthContext } from '../core/health.js';
import { basicAuth, createDispatcher, httpGet, redact } from '../core/http.js';
import { APPDB_TOKEN_PASSWORD } from './fetch.js';

/** `doctor`: a conditional GET (If-Modified-Since now): an unchanged list costs no body; the list is not synced. */
export async function checkImageList({ config, clock }: HealthContext, sub: Subscription): Promise<CheckResult> {
  const url = new URL(sub.url);
  const check = `subscription ${redact(url)}`;
  if (url.protocol === 'file:') {
    try {
      await access(url, constants.R_OK);
      return ok(check, 'the file is readable');
    } catch (err) {
      return fail(check, failureText(err), 'check the path and security.allowedFileFolders');
    }
  }
  const dispatcher = createDispatcher({
    connectTimeoutMs: config.security.connectTimeoutMs,
    readTimeoutMs: config.security.readTimeoutMs,
  });
  try {
    // As a sync sends it: the subscription's credential, only to the list's host (httpGet drops it on a redirect elsewhere).
    const token = sub.credential ? await resolveCredential(config, sub.credential) : undefined;
    const sentAt = Date.now();
    const response = await withTimeout(
      redact(url),
      httpGet(url, {
        dispatcher,
        redirects: { maxRedirects: config.security.maxRedirects },
        headers: { 'if-modified-since': new Date().toUTCString() },
        credentialHeaders: token ? { authorization: basicAuth(token, APPDB_TOKEN_PASSWORD) } : undefined,
      }),
    );
    await response.body.dump().catch(() => undefined);
    clock(url.host, response.headers.date, sentAt);
    return ok(
      check,
      `HTTP ${response.status}${sub.credential ? ` with credential '${sub.credential}'` : ''}${response.url.href !== url.href ? ` (from ${redact(response.url)})` : ''}`,
    );
  } catch (err) {
    return fail(
      check,
      failureText(err),
      sub.credential
        ? `check the list's URL and the secret of security.credentials.${sub.credential}`
        : "check the list's URL, and whether it needs a credential",
    );
  } finally {
    // Destroyed, not closed: a request the check gave up on is not waited for.
    await dispatcher.destroy().catch(() => undefined);
  }
}
