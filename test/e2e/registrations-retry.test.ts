import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { publishBodies, runsByWorkflowId, temporalClient, waitFor } from '../support/bridge.js';
import { runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import {
  generateSelfSignedCertificate,
  startTestServer,
  type SelfSignedCertificate,
  type TestServer,
} from '../support/http-server.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';

interface Row {
  workflowId: string;
  type: string;
  status: string;
  stage: string;
  imageIdentifier: string;
}

/**
 * Failed registrations retried in bulk, through the real command line: registrations that failed because the site's
 * download credential was wrong are started again in bulk once it is fixed, under the same
 * workflow ids, and register once; `--dry-run` and the filters start nothing else; `registrations
 * show` tells the stages, the failure and the Web UI link.
 */
describe('registrations retry and show', () => {
  const topology = uniqueTopology('retry');
  const taskQueue = uniqueTaskQueue('retry');
  const suffix = Math.random().toString(16).slice(2, 10);
  const listA = `retry-a-${suffix}`;
  const listB = `retry-b-${suffix}`;
  const goodToken = `tok-${suffix}-right`;
  let dir: string;
  let conf: string;
  let tokenFile: string;
  let cert: SelfSignedCertificate;
  let server: TestServer;
  let service: ServiceProcess;
  let env: Record<string, string>;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let temporal: Awaited<ReturnType<typeof temporalClient>>;

  const failedOf = async (listId: string): Promise<Row[]> => {
    const result = await runCli(
      ['registrations', '--conf', conf, '--status', 'failed', '--image-list-identifier', listId, '--json'],
      { env },
    );
    expect(result.exitCode).toBe(0);
    return result.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Row);
  };
  const event = (listId: string, imageId: string) =>
    JSON.stringify({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
      VMCATCHER_EVENT_DC_TITLE: `Image ${imageId}`,
      VMCATCHER_EVENT_HV_URI: server.at(`/${listId}/${imageId}.qcow2`),
      VMCATCHER_EVENT_HV_VERSION: '1.0',
      VMCATCHER_EVENT_HV_FORMAT: 'qcow2',
      VMCATCHER_EVENT_VO: 'test.vo',
    });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-retry-'));
    const raw = path.join(dir, 'disk.raw');
    const qcow2 = path.join(dir, 'disk.qcow2');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    const authorization = `Basic ${Buffer.from(`${goodToken}:x-oauth-basic`).toString('base64')}`;
    // Over https, as a credential rule's token goes nowhere else; the worker trusts the test
    // certificate as a site trusts its CA.
    cert = await generateSelfSignedCertificate('localhost');
    server = await startTestServer({ tls: cert, hostname: 'localhost' });
    for (const p of [`/${listA}/img-1.qcow2`, `/${listA}/img-2.qcow2`, `/${listB}/img-3.qcow2`])
      server.route(p, { file: qcow2, authorization });
    // The site's token for the image server, wrong at first (an expired one, say).
    tokenFile = path.join(dir, 'images.token');
    await writeFile(tokenFile, `tok-${suffix}-expired\n`, { mode: 0o600 });
    cloud = await fakeCloud(dir, 'retry');
    conf = await writeConf(
      topology,
      `worker { workingFolder = "${dir}/work" }
spool { folder = "${dir}/spool" }
security {
  credentials { images = { file = "${tokenFile}" } }
  credentialRules = [ { origin = "https://localhost:${server.port}", credential = "images" } ]
  # The events carry no checksum: this test is about retrying failed registrations.
  allowUnverifiedImages = true
}
${cloud.synnefoConf('cloud = "retry"\n  prepare = false')}`,
    );
    env = { TEMPORAL_TASK_QUEUE: taskQueue, NODE_EXTRA_CA_CERTS: cert.certPath, ...cloud.env };
    service = await startService(['run', '--conf', conf], { env, readyPattern: /consuming/ });
    temporal = await temporalClient();
    await publishBodies(topology, [event(listA, 'img-1'), event(listA, 'img-2'), event(listB, 'img-3')]);
    await waitFor(
      'two failed registrations of list A',
      () => failedOf(listA),
      (rows) => rows.length === 2,
      120_000,
    );
    await waitFor(
      'one of list B',
      () => failedOf(listB),
      (rows) => rows.length === 1,
      60_000,
    );
  }, 240_000);

  afterAll(async () => {
    await service?.stop();
    await temporal?.close();
    await server?.close();
    await cert?.cleanup();
    await deleteTopology(topology);
    await rm(dir, { recursive: true, force: true });
  });

  const registrationId = (listId: string, imageId: string) => `register:synnefo-retry:${listId}:${imageId}:v-1.0`;

  test('registrations show prints the stages, the failure and the Web UI link', async () => {
    const id = registrationId(listA, 'img-1');
    const result = await runCli(['registrations', 'show', id, '--conf', conf], { env });
    expect(result.exitCode).toBe(0);
    const out = result.stdout;
    expect(out).toContain(`registerImage ${id}\nStatus: FAILED\nImage: Image img-1 of ${listA}\n`);
    expect(out).toContain(`Image revision: image:synnefo-retry:${listA}:img-1:v-1.0`);
    const stages = [...out.matchAll(/^ {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}(\S+)$/gm)].map((m) => m[1]);
    expect(stages[0]).toBe('queued');
    expect(stages).toContain('acquiring');
    expect(stages.at(-1)).toBe('failed');
    expect(out).toMatch(
      /^Failure: step \w+: GET https:\/\/localhost:\d+\/\S+ failed: HTTP 401 \(check the token\) \[FetchError\]$/m,
    );
    expect(out).toMatch(
      new RegExp(
        `^Web UI: http://localhost:8233/namespaces/default/workflows/${encodeURIComponent(id)}/[0-9a-f-]{36}$`,
        'm',
      ),
    );
    expect(out).not.toContain(goodToken);

    // The image revision's id shows the registration it ran.
    const viaRevision = await runCli(
      ['registrations', 'show', `image:synnefo-retry:${listA}:img-1:v-1.0`, '--conf', conf],
      {
        env,
      },
    );
    expect(viaRevision.stdout).toContain(`ran ${id}:`);
    expect(viaRevision.stdout).toContain('Status: FAILED');
    const unknown = await runCli(['registrations', 'show', 'register:nothing', '--conf', conf], { env });
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain("snf-vmcatcher: no workflow 'register:nothing'");
  });

  test('--dry-run and filters that match nothing restart nothing', async () => {
    const before = await runsByWorkflowId(temporal.client, listA);
    const dry = await runCli(
      ['registrations', 'retry', '--conf', conf, '--image-list-identifier', listA, '--dry-run'],
      {
        env,
      },
    );
    expect(dry.exitCode).toBe(0);
    expect(dry.stdout.split('\n').sort()).toEqual(
      ['img-1', 'img-2'].map(
        (img) => `would restart ${registrationId(listA, img)} through image:synnefo-retry:${listA}:${img}:v-1.0`,
      ),
    );
    expect(dry.stderr).toContain('Would restart 2 of 2 failed workflow(s)');
    const otherCloud = await runCli(['registrations', 'retry', '--conf', conf, '--cloud', 'elsewhere'], { env });
    expect(otherCloud.exitCode).toBe(0);
    expect(otherCloud.stdout).toBe('');
    expect(otherCloud.stderr).toContain('No failed registrations match');
    expect(await runsByWorkflowId(temporal.client, listA)).toEqual(before);
    expect(await failedOf(listA)).toHaveLength(2);
  });

  test('after the credential is fixed, a bulk retry registers each failed image once, under the same workflow ids; a second retry restarts nothing', async () => {
    const runsBefore = await runsByWorkflowId(temporal.client, listA);
    await writeFile(tokenFile, `${goodToken}\n`);
    const retry = await runCli(
      ['registrations', 'retry', '--conf', conf, '--image-list-identifier', listA, '--cloud', 'retry', '--since', '1d'],
      { env },
    );
    expect(retry.exitCode).toBe(0);
    expect(retry.stdout.split('\n').sort()).toEqual(
      ['img-1', 'img-2'].map((img) =>
        expect.stringMatching(
          new RegExp(
            `^restarted ${registrationId(listA, img)} through image:synnefo-retry:${listA}:${img}:v-1\\.0 \\(Web UI: http://\\S+\\)$`,
          ),
        ),
      ),
    );
    await waitFor(
      'two images registered',
      () => cloud.images(),
      (images) => images.length === 2,
      120_000,
    );
    await waitFor(
      'both registrations completed',
      () =>
        runCli(['registrations', '--conf', conf, '--image-list-identifier', listA, '--status', 'completed', '--json'], {
          env,
        }),
      (r) => r.stdout.split('\n').filter(Boolean).length === 2,
      60_000,
    );
    // The same ids ran again (one more run each), nothing else started.
    const runsAfter = await runsByWorkflowId(temporal.client, listA);
    expect([...runsAfter.keys()].sort()).toEqual([...runsBefore.keys()].sort());
    for (const [id, runs] of runsBefore) expect(runsAfter.get(id)).toBe(runs + 1);

    // The failed runs are still listed by Temporal, but their ids have moved on: nothing restarts twice.
    const again = await runCli(['registrations', 'retry', '--conf', conf, '--image-list-identifier', listA], { env });
    expect(again.exitCode).toBe(0);
    expect(again.stdout.split('\n').filter(Boolean)).toHaveLength(2);
    expect(again.stdout).toMatch(/^skipped register:\S+: its latest run is completed/m);
    expect(again.stderr).toContain('Restarted 0 of 2 failed workflow(s); 2 skipped');
    expect(await runsByWorkflowId(temporal.client, listA)).toEqual(runsAfter);

    const images = await cloud.images();
    expect(images.map((i) => i.properties.VMCATCHER_DC_IDENTIFIER).sort()).toEqual(['img-1', 'img-2']);
    // The other list's failure was not part of the retry.
    expect(await failedOf(listB)).toHaveLength(1);
  }, 200_000);
});
