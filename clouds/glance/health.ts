import { request } from 'undici';
import type { GlanceConfig } from '../../core/config.js';
import {
  CHECK_TIMEOUT_MS,
  fail,
  failureText,
  ok,
  skip,
  withTimeout,
  type CheckResult,
  type HealthContext,
} from '../../core/health.js';
import { redact } from '../../core/http.js';
import type { TargetChecks } from '../target.js';
import { errorText, KeystoneSession } from './keystone.js';
import { keystoneCredential } from './session.js';

/** `doctor` on a Glance cloud: a Keystone token and one page of the image endpoint; nothing to prepare with. */
export function glanceChecks(glance: GlanceConfig): TargetChecks {
  return {
    cloud: async (ctx) => [await imageEndpoint(ctx, glance)],
    preparation: async () => [skip('snf-mkimage', `not used by a Glance cloud`)],
  };
}

async function imageEndpoint({ config, clock }: HealthContext, glance: GlanceConfig): Promise<CheckResult> {
  const check = `Glance cloud '${glance.name}'`;
  try {
    const session = new KeystoneSession({
      authUrl: glance.authUrl,
      credential: await keystoneCredential(config, glance),
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
    clock(new URL(endpoint).host, res.headers.date, sentAt);
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
      failureText(err),
      `check cloud.authUrl, cloud.applicationCredentialId (or username and project) and the secret of security.credentials.${glance.credential}`,
    );
  }
}
