import type { RegistrySubscription } from '../core/config.js';
import { fail, failureText, ok, withTimeout, type CheckResult, type HealthContext } from '../core/health.js';
import { RegistryClient, resolveRegistryLogin } from './client.js';

/** `doctor`: the registry's API root with the subscription's login, what every listing of the project starts with. */
export async function checkRegistryProject(
  { config, clock }: HealthContext,
  sub: RegistrySubscription,
): Promise<CheckResult> {
  const check = `subscription ${sub.registry} project ${sub.project}`;
  let client: RegistryClient | undefined;
  try {
    const login = sub.credential ? await resolveRegistryLogin(config, sub.credential) : undefined;
    client = new RegistryClient({ registry: new URL(sub.registry), login, security: config.security });
    const sentAt = Date.now();
    const response = await withTimeout(sub.registry, client.get('v2/'));
    await response.body.dump().catch(() => undefined);
    clock(client.name, response.headers.date, sentAt);
    return ok(check, `HTTP ${response.status}${sub.credential ? ` with credential '${sub.credential}'` : ''}`);
  } catch (err) {
    return fail(
      check,
      failureText(err),
      sub.credential
        ? `check the registry URL and the "user:password" of security.credentials.${sub.credential}`
        : 'check the registry URL, and whether the project needs a credential',
    );
  } finally {
    await client?.close();
  }
}
