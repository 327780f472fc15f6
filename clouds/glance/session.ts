/**
 * A Glance client from the configuration: the named credential is resolved here, on the
 * worker, when the client is made; workflows only ever carry the cloud's name.
 */
import type { Config, GlanceConfig } from '../../core/config.js';
import { resolveCredential } from '../../core/credentials.js';
import { GlanceClient } from './client.js';
import { KeystoneSession, type KeystoneCredential } from './keystone.js';

export async function keystoneCredential(config: Config, glance: GlanceConfig): Promise<KeystoneCredential> {
  const secret = await resolveCredential(config, glance.credential);
  if (glance.applicationCredentialId !== undefined)
    return { type: 'application-credential', id: glance.applicationCredentialId, secret };
  return {
    type: 'password',
    username: glance.username ?? '',
    userDomain: glance.userDomain,
    password: secret,
    project: glance.project ?? '',
    projectDomain: glance.projectDomain,
  };
}

export async function glanceClientFromConfig(config: Config, glance: GlanceConfig): Promise<GlanceClient> {
  const session = new KeystoneSession({
    authUrl: glance.authUrl,
    credential: await keystoneCredential(config, glance),
    region: glance.region,
    interface: glance.interface,
    timeoutMs: config.security.readTimeoutMs,
  });
  return new GlanceClient({ session, hashAlgorithm: glance.hashAlgorithm, timeoutMs: config.security.readTimeoutMs });
}
