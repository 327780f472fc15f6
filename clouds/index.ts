import type { CloudEntry, Config } from '../core/config.js';
import { ConfigError } from '../core/errors.js';
import type { HealthContext } from '../core/health.js';
import { chosenCloud, type RegistrationOptions, type RegistrationSite } from '../core/workflow-contract.js';
import type { ActivityDeps } from '../runtime/deps.js';
import { glanceChecks } from './glance/health.js';
import { glanceSite, glanceTarget } from './glance/index.js';
import { synnefoChecks } from './synnefo/health.js';
import { synnefoSite, synnefoTarget } from './synnefo/index.js';
import type { CloudTarget, TargetChecks } from './target.js';

/**
 * The clouds a worker registers images on. A site of one cloud configures it as before there were
 * several: `cloud.type` chooses Synnefo (the `synnefo` block) or a Glance cloud. A deployment of
 * several names them in `clouds` (docs/operations.md, "Many clouds"); every event then carries the
 * name of its cloud (`options.cloud`, set by the starter), and the steps of its workflows run on
 * that cloud's target. A new kind of target is a folder beside clouds/synnefo/ and clouds/glance/
 * implementing CloudTarget, chosen here (its target, its site and its health checks) and nowhere else.
 */

/** Whether the deployment names its clouds (`clouds`) rather than configuring one (`cloud`, `synnefo`). */
function hasNamedClouds(config: Pick<Config, 'clouds'>): boolean {
  return Object.keys(config.clouds).length > 0;
}

/**
 * A Synnefo entry of `clouds` as the Synnefo target reads its settings: the `synnefo` block with
 * the entry's own keys over it, and the entry's kamaki cloud as the one every step uses.
 */
function synnefoConfigOf(config: Config, entry: Extract<CloudEntry, { type: 'synnefo' }>): Config {
  const { type: _type, vos: _vos, kamakiCloud, ...own } = entry;
  const defined = Object.fromEntries(Object.entries(own).filter(([, v]) => v !== undefined));
  return { ...config, synnefo: { ...config.synnefo, ...defined, cloud: kamakiCloud ?? config.synnefo.cloud } };
}

/** The target of one named cloud; the options it is given no longer name a cloud (the target is that cloud). */
function namedTarget(deps: ActivityDeps, name: string, entry: CloudEntry): CloudTarget {
  const logger = deps.logger.child({ cloud: `${entry.type}-${name}` });
  const target =
    entry.type === 'glance'
      ? glanceTarget({ ...deps, logger }, { ...entry, name })
      : synnefoTarget({ ...deps, config: synnefoConfigOf(deps.config, entry), logger });
  const own = <T extends { options: RegistrationOptions }>(req: T): T => {
    const { cloud: _cloud, kamakiCloud: _kamakiCloud, ...options } = req.options;
    return { ...req, options };
  };
  return {
    kind: target.kind,
    diskFormats: target.diskFormats,
    findImage: (req) => target.findImage(own(req)),
    prepare: (input) => target.prepare(own(input)),
    publish: (input) => target.publish(own(input)),
    expire: (req) => target.expire(own(req)),
    inventory: (req) => target.inventory(own(req)),
  };
}

/** Chooses the target of each step by the cloud its options name. */
export interface CloudTargets {
  of(options: RegistrationOptions): CloudTarget;
}

/**
 * The worker's targets: the one cloud of a site that has one, or, in a deployment of several, the
 * `clouds` entry each event names (made once per worker, so each keeps its session).
 */
export function cloudTargets(deps: ActivityDeps): CloudTargets {
  const config = deps.config;
  if (!hasNamedClouds(config)) {
    const cloud = config.cloud;
    const only =
      cloud.type === 'glance'
        ? glanceTarget({ ...deps, logger: deps.logger.child({ cloud: `glance-${cloud.name}` }) }, cloud)
        : synnefoTarget({ ...deps, logger: deps.logger.child({ cloud: 'synnefo' }) });
    return { of: () => only };
  }
  const made = new Map<string, CloudTarget>();
  return {
    of(options) {
      const name = chosenCloud(options);
      const entry = name === undefined ? undefined : config.clouds[name];
      if (name === undefined || entry === undefined) {
        throw new ConfigError(
          name === undefined
            ? `the registration names no cloud, and this deployment has several (${Object.keys(config.clouds).join(', ')})`
            : `cloud '${name}' is not one of this worker's clouds (${Object.keys(config.clouds).join(', ')})`,
          { key: 'clouds' },
        );
      }
      let target = made.get(name);
      if (!target) made.set(name, (target = namedTarget(deps, name, entry)));
      return target;
    },
  };
}

/**
 * The site's clouds as registration identities name them (registrationTarget, `<type>-<name>`):
 * its one cloud, or every entry of `clouds` with the VOs it takes, and where events that name no
 * cloud go (`defaultClouds`, else every cloud).
 */
export function registrationSite(
  config: Pick<Config, 'cloud' | 'synnefo' | 'clouds' | 'defaultClouds'>,
): RegistrationSite {
  if (hasNamedClouds(config)) {
    const clouds = Object.fromEntries(
      Object.entries(config.clouds).map(([name, entry]) => [
        name,
        entry.vos ? { type: entry.type, vos: [...entry.vos] } : { type: entry.type },
      ]),
    );
    return { type: 'clouds', clouds, defaultClouds: [...(config.defaultClouds ?? Object.keys(config.clouds))] };
  }
  const cloud = config.cloud;
  if (cloud.type === 'glance') return glanceSite(cloud);
  return synnefoSite(config.synnefo);
}

/** What `doctor` checks of the configured clouds: each one's, by the clouds' names. */
export function cloudChecks(config: Config): TargetChecks {
  if (!hasNamedClouds(config)) {
    const cloud = config.cloud;
    if (cloud.type === 'glance') return glanceChecks(cloud);
    return synnefoChecks;
  }
  const byName = Object.entries(config.clouds).sort(([a], [b]) => a.localeCompare(b));
  const each = byName.map(([name, entry]): [TargetChecks, (ctx: HealthContext) => HealthContext] =>
    entry.type === 'glance'
      ? [glanceChecks({ ...entry, name }), (ctx) => ctx]
      : [
          synnefoChecks,
          // Its kamaki cloud only: the subscriptions' `clouds` name entries of `clouds`, not kamaki clouds.
          (ctx) => ({
            ...ctx,
            config: { ...synnefoConfigOf(ctx.config, entry), subscriptions: [], registrySubscriptions: [] },
          }),
        ],
  );
  const all = (step: keyof TargetChecks) => async (ctx: HealthContext) =>
    (await Promise.all(each.map(([checks, contextOf]) => checks[step](contextOf(ctx))))).flat();
  return { cloud: all('cloud'), preparation: all('preparation') };
}

/** Every kind of cloud a worker can register on: what `registrations --cloud NAME` may mean. */
export const CLOUD_TYPES: readonly string[] = ['synnefo', 'glance'];
