/**
 * The production Temporal server, SQL tool and UI server that scripts/build-temporal-server.sh
 * builds (setup --production, or the beforeAll below when they are missing) are the versions
 * docker-compose.yml runs, and the server takes compose's configuration. In the services project:
 * it needs the built binaries (test/unit/compose.test.ts checks the files themselves).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { parse as parseYaml } from 'yaml';
import { ROOT } from '../support/cli.js';
import {
  ensureProductionTemporalBuilt,
  PRODUCTION_BUILD_TIMEOUT_MS,
  TEMPORAL_SERVER,
  TEMPORAL_UI_SERVER,
  versions,
} from '../support/production-temporal.js';

interface Service {
  environment?: Record<string, string | number | null> | string[];
}
const compose = parseYaml(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
};

describe("the production Temporal binaries: compose's versions and configuration", () => {
  const { TEMPORAL_SERVER_VERSION, TEMPORAL_UI_VERSION } = versions();
  const server = compose.services.temporal!;
  const envOf = (svc: Service) => (Array.isArray(svc.environment) ? {} : (svc.environment ?? {}));

  beforeAll(ensureProductionTemporalBuilt, PRODUCTION_BUILD_TIMEOUT_MS);

  it('the binaries scripts/build-temporal-server.sh built are the versions compose runs', async () => {
    expect((await execa(TEMPORAL_SERVER, ['--version'])).stdout).toContain(TEMPORAL_SERVER_VERSION);
    expect(
      (await execa(path.join(path.dirname(TEMPORAL_SERVER), 'temporal-sql-tool'), ['--version'])).stdout,
    ).toContain(TEMPORAL_SERVER_VERSION);
    expect((await execa(TEMPORAL_UI_SERVER.binary, ['--version'])).stdout).toContain(TEMPORAL_UI_VERSION);
  });

  it("the server renders docker/temporal/config/production.yaml with compose's environment, and accepts the dynamic config", async () => {
    const dynamicConfig = path.join(ROOT, 'docker/temporal/dynamicconfig/production-sql.yaml');
    const env = { ...envOf(server), POSTGRES_PWD: 'from-env', DYNAMIC_CONFIG_FILE_PATH: dynamicConfig } as Record<
      string,
      string
    >;
    const rendered = await execa(
      TEMPORAL_SERVER,
      ['--config', path.join(ROOT, 'docker/temporal/config'), '--env', 'production', 'render-config'],
      { env, extendEnv: false },
    );
    expect(rendered.stdout).toMatch(/databaseName: temporal\n/);
    expect(rendered.stdout).toMatch(/databaseName: temporal_visibility\n/);
    expect(rendered.stdout).toMatch(/connectAddr: postgresql:5432/);
    expect(rendered.stdout).toMatch(/pluginName: postgres12/);
    expect(rendered.stdout).toContain(`filepath: ${dynamicConfig}`);
    expect(rendered.stdout).toMatch(/listenAddress: 0\.0\.0\.0:8000/);
    const validated = await execa(TEMPORAL_SERVER, ['validate-dynamic-config', dynamicConfig], { reject: false });
    expect([validated.exitCode, validated.stdout]).toEqual([0, expect.not.stringMatching(/error/i)]);
  });
});
