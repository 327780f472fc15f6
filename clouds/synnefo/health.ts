import path from 'node:path';
import { execa } from 'execa';
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
import type { TargetChecks } from '../target.js';
import { Kamaki } from './kamaki.js';

/** `doctor` on Synnefo: `kamaki user info` for every kamaki cloud images go to, and sudo for snf-mkimage. */
export const synnefoChecks: TargetChecks = { cloud: kamakiClouds, preparation: snfMkimage };

async function kamakiClouds({ config, log }: HealthContext): Promise<CheckResult[]> {
  const names = new Set<string>();
  if (config.synnefo.cloud) names.add(config.synnefo.cloud);
  for (const sub of [...config.subscriptions, ...config.registrySubscriptions]) if (sub.cloud) names.add(sub.cloud);
  if (names.size === 0)
    return [
      fail(
        'Synnefo cloud',
        'no kamaki cloud is configured (synnefo.cloud)',
        'set synnefo.cloud to the cloud of ~/.kamakirc images are registered in',
      ),
    ];
  // kamaki is killed when the check gives up, not after worker.toolTimeoutMs (an hour).
  const bounded = { ...config, worker: { ...config.worker, toolTimeoutMs: CHECK_TIMEOUT_MS } };
  const results: CheckResult[] = [];
  for (const name of names) {
    const check = `Synnefo cloud '${name}'`;
    try {
      const account = await withTimeout('kamaki', new Kamaki(bounded, log, name).accountId());
      results.push(ok(check, `kamaki user info: account ${account}`));
    } catch (err) {
      results.push(
        fail(
          check,
          failureText(err),
          `check synnefo.kamaki (${config.synnefo.kamaki}) and the cloud's url and token in the service user's ~/.kamakirc (\`kamaki user info --cloud ${name}\`)`,
        ),
      );
    }
  }
  return results;
}

async function snfMkimage({ config }: HealthContext): Promise<CheckResult[]> {
  const { synnefo } = config;
  const check = 'snf-mkimage';
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
