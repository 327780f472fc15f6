import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { subscriptionScheduleId } from '../../subscriptions/schedules.js';
import { freePort, publishBodies, temporalClient, waitFor } from '../support/bridge.js';
import { runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { metricNamesOf, namesIn, packagedExpressions, scrape, valueOf, type Samples } from '../support/metrics.js';
import { deleteTopology, uniqueTopology, writeConf } from '../support/rabbit.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';

/** Series Prometheus makes itself, not any endpoint. */
const PROMETHEUS_OWN = new Set(['up']);

/**
 * The metrics move as the images do. A real `run` (bridge and worker), real
 * RabbitMQ and Temporal, a real HTTP server for the image and the image list; its three
 * endpoints (the worker's product metrics, the Temporal SDK's, the bridge's) scraped before and
 * after each image. Then every metric the packaged dashboard and alert rules name is in them.
 */
describe('product metrics during an end-to-end run', () => {
  const topology = uniqueTopology('metrics');
  const listId = `metrics-list-${Math.random().toString(16).slice(2, 10)}`;
  let dir: string;
  let server: TestServer;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let conf: string;
  let env: Record<string, string>;
  let service: ServiceProcess;
  let ports: { product: number; sdk: number; bridge: number };
  let image: { size: number; sha512: string };
  let listUrl: string;

  const scrapeAll = async () => ({
    product: await scrape(ports.product),
    sdk: await scrape(ports.sdk),
    bridge: await scrape(ports.bridge),
  });
  /** Scrapes the product endpoint until `ok` holds of it. */
  const productWhen = (what: string, ok: (s: Samples) => boolean) =>
    waitFor(what, () => scrape(ports.product), ok, 180_000);
  const flatMessage = (n: number, uri: string, sha512: string, type = 'AvailablePostfix') =>
    JSON.stringify({
      VMCATCHER_EVENT_TYPE: type,
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_DC_IDENTIFIER: `metrics-image-${n}`,
      VMCATCHER_EVENT_DC_TITLE: `Metrics image ${n}`,
      VMCATCHER_EVENT_HV_URI: uri,
      VMCATCHER_EVENT_HV_VERSION: '1.0',
      VMCATCHER_EVENT_HV_FORMAT: 'qcow2',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: sha512,
      VMCATCHER_EVENT_VO: 'metrics.vo',
    });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'snf-metrics-'));
    const raw = path.join(dir, 'disk.raw');
    const qcow2 = path.join(dir, 'disk.qcow2');
    await execa('qemu-img', ['create', '-f', 'raw', raw, '8M']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
    image = {
      size: (await stat(qcow2)).size,
      sha512: createHash('sha512')
        .update(await readFile(qcow2))
        .digest('hex'),
    };
    server = await startTestServer({
      routes: { '/images/disk.qcow2': { file: qcow2 }, '/images/broken.qcow2': { file: qcow2 } },
    });
    listUrl = server.at('/lists/metrics.list');
    // An unsigned list, accepted by policy: the signature path has tests of its own.
    server.route('/lists/metrics.list', {
      etag: '"v1"',
      body: JSON.stringify({
        'hv:imagelist': {
          'dc:identifier': `${listId}-subscribed`,
          'dc:title': 'Metrics list',
          'dc:date:created': '2024-01-01T00:00:00Z',
          'dc:date:expires': '2499-01-01T00:00:00Z',
          'hv:version': '1',
          'hv:images': [
            {
              'hv:image': {
                'dc:identifier': 'metrics-subscribed-1',
                'dc:title': 'Subscribed image',
                'hv:uri': server.at('/images/disk.qcow2'),
                'hv:size': String(image.size),
                'hv:format': 'qcow2',
                'hv:version': '1',
                'sl:checksum:sha512': image.sha512,
              },
            },
          ],
        },
      }),
    });
    cloud = await fakeCloud(dir, 'site');
    ports = { product: await freePort(), sdk: await freePort(), bridge: await freePort() };
    conf = await writeConf(
      topology,
      `worker {
  workingFolder = "${dir}/work"
  metricsPort = ${ports.sdk}
  productMetricsPort = ${ports.product}
}
bridge { metricsPort = ${ports.bridge} }
spool { folder = "${dir}/spool" }
security { signaturePolicy = "accept", endorserPolicy = "accept" }
subscriptions = [ { url = "${listUrl}", every = 8760h } ]
${cloud.synnefoConf('cloud = "site"')}`,
    );
    env = { TEMPORAL_TASK_QUEUE: uniqueTaskQueue('metrics'), ...cloud.env };
    service = await startService(['run', '--conf', conf], { env, readyPattern: /consuming/ });
  }, 180_000);

  afterAll(async () => {
    await service?.stop();
    // The worker made a schedule for the subscription: it is not another test's to run.
    const temporal = await temporalClient();
    await temporal.client.schedule
      .getHandle(subscriptionScheduleId(listUrl))
      .delete()
      .catch(() => undefined);
    await temporal.close();
    await deleteTopology(topology);
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('an image registered through the bridge: registered +1, downloaded bytes + its size, one attempt of every step', async () => {
    const before = await scrapeAll();
    expect(valueOf(before.product, 'snf_vmcatcher_host_slots')).toBeGreaterThan(0);
    await publishBodies(topology, [flatMessage(1, server.at('/images/disk.qcow2'), image.sha512)]);
    const after = await productWhen(
      'the registration to be counted',
      (s) =>
        valueOf(s, 'snf_vmcatcher_images_registered_total', { cloud: 'synnefo-site' }) ===
        valueOf(before.product, 'snf_vmcatcher_images_registered_total', { cloud: 'synnefo-site' }) + 1,
    );
    expect(
      (await cloud.images()).filter((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'metrics-image-1'),
    ).toHaveLength(1);
    expect(valueOf(after, 'snf_vmcatcher_downloaded_bytes_total')).toBe(
      valueOf(before.product, 'snf_vmcatcher_downloaded_bytes_total') + image.size,
    );
    for (const step of ['acquire', 'inspect', 'convert', 'prepare', 'upload']) {
      const labels = { step, outcome: 'completed' };
      expect([step, valueOf(after, 'snf_vmcatcher_step_duration_seconds_count', labels)]).toEqual([
        step,
        valueOf(before.product, 'snf_vmcatcher_step_duration_seconds_count', labels) + 1,
      ]);
    }
    expect(valueOf(after, 'snf_vmcatcher_images_failed_total')).toBe(
      valueOf(before.product, 'snf_vmcatcher_images_failed_total'),
    );
    expect(valueOf(after, 'snf_vmcatcher_images_waiting_for_slot')).toBe(0);
    const bridge = await scrape(ports.bridge);
    expect(valueOf(bridge, 'snf_vmcatcher_bridge_messages_consumed_total')).toBe(
      valueOf(before.bridge, 'snf_vmcatcher_bridge_messages_consumed_total') + 1,
    );
    expect(valueOf(bridge, 'snf_vmcatcher_bridge_events_delivered_total')).toBe(
      valueOf(before.bridge, 'snf_vmcatcher_bridge_events_delivered_total') + 1,
    );
  }, 300_000);

  test('the same image expired through the bridge: expired +1 on its cloud', async () => {
    const before = await scrape(ports.product);
    const cloudLabel = { cloud: 'synnefo-site' };
    await publishBodies(topology, [flatMessage(1, server.at('/images/disk.qcow2'), image.sha512, 'ExpirePostfix')]);
    await productWhen(
      'the expiry to be counted',
      (s) =>
        valueOf(s, 'snf_vmcatcher_images_expired_total', cloudLabel) ===
        valueOf(before, 'snf_vmcatcher_images_expired_total', cloudLabel) + 1,
    );
    const [expired] = (await cloud.images()).filter((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'metrics-image-1');
    expect(expired.is_public).toBe(false);
  }, 300_000);

  test('an image whose checksum does not match: counted failed once, with its kind, and nothing registered', async () => {
    const before = await scrape(ports.product);
    await publishBodies(topology, [flatMessage(2, server.at('/images/broken.qcow2'), 'ab'.repeat(64))]);
    const failed = { cloud: 'synnefo-site', action: 'register', kind: 'ImageIntegrityError' };
    const after = await productWhen(
      'the failure to be counted',
      (s) =>
        valueOf(s, 'snf_vmcatcher_images_failed_total', failed) ===
        valueOf(before, 'snf_vmcatcher_images_failed_total', failed) + 1,
    );
    expect(valueOf(after, 'snf_vmcatcher_images_failed_total')).toBe(
      valueOf(before, 'snf_vmcatcher_images_failed_total') + 1,
    );
    expect(valueOf(after, 'snf_vmcatcher_images_registered_total')).toBe(
      valueOf(before, 'snf_vmcatcher_images_registered_total'),
    );
    expect(valueOf(after, 'snf_vmcatcher_step_duration_seconds_count', { step: 'acquire', outcome: 'failed' })).toBe(
      valueOf(before, 'snf_vmcatcher_step_duration_seconds_count', { step: 'acquire', outcome: 'failed' }) + 1,
    );
  }, 300_000);

  test('a message that is not an event: dead-lettered, and the dead-letter queue depth says 1', async () => {
    const before = await scrape(ports.bridge);
    expect(valueOf(before, 'snf_vmcatcher_bridge_dead_letter_messages')).toBe(0);
    await publishBodies(topology, ['this is not an event']);
    const after = await waitFor(
      'the dead letter to show',
      () => scrape(ports.bridge),
      // The queue holds it once it is published there; the bridge counts it once it acked the original.
      (s) =>
        valueOf(s, 'snf_vmcatcher_bridge_dead_letter_messages') === 1 &&
        valueOf(s, 'snf_vmcatcher_bridge_dead_lettered_total') > 0,
      60_000,
    );
    expect(valueOf(after, 'snf_vmcatcher_bridge_dead_lettered_total')).toBe(
      valueOf(before, 'snf_vmcatcher_bridge_dead_lettered_total') + 1,
    );
    expect(valueOf(after, 'snf_vmcatcher_bridge_messages_consumed_total')).toBe(
      valueOf(before, 'snf_vmcatcher_bridge_messages_consumed_total') + 1,
    );
  }, 120_000);

  test("a subscription synced: a sync counted by outcome, and its last success's timestamp from Temporal", async () => {
    const before = await scrape(ports.product);
    const startedAt = Date.now() / 1000;
    const sync = await runCli(['sync-now', '--conf', conf, '--url', listUrl, '--wait'], { env, timeoutMs: 240_000 });
    expect(sync.exitCode).toBe(0);
    const subscription = { subscription: listUrl };
    const after = await productWhen(
      'the sync and its last success to show',
      (s) =>
        valueOf(s, 'snf_vmcatcher_subscription_syncs_total', { ...subscription, outcome: 'changed' }) ===
          valueOf(before, 'snf_vmcatcher_subscription_syncs_total', { ...subscription, outcome: 'changed' }) + 1 &&
        valueOf(s, 'snf_vmcatcher_subscription_last_success_timestamp_seconds', subscription) >= startedAt - 1,
    );
    expect(valueOf(after, 'snf_vmcatcher_subscription_interval_seconds', subscription)).toBe(8760 * 3600);
    expect(
      valueOf(after, 'snf_vmcatcher_subscription_last_success_timestamp_seconds', subscription),
    ).toBeLessThanOrEqual(Date.now() / 1000);
    expect(valueOf(after, 'snf_vmcatcher_subscription_created_timestamp_seconds', subscription)).toBeLessThan(
      startedAt,
    );
  }, 300_000);

  test('every metric the packaged dashboard and alert rules name is in a real scrape of the worker, the SDK or the bridge', async () => {
    const { product, sdk, bridge } = await scrapeAll();
    const exported = new Set([...namesIn(product), ...namesIn(sdk), ...namesIn(bridge)]);
    const missing: string[] = [];
    const expressions = await packagedExpressions();
    for (const { where, expr } of expressions) {
      for (const name of metricNamesOf(expr)) {
        if (!exported.has(name) && !PROMETHEUS_OWN.has(name)) missing.push(`${where}: ${name}`);
      }
    }
    expect(missing).toEqual([]);
    // Not vacuous: the expressions name the product's, the bridge's and the SDK's metrics.
    const named = new Set(expressions.flatMap((e) => metricNamesOf(e.expr)));
    expect([...named].filter((n) => n.startsWith('snf_vmcatcher_bridge_')).length).toBeGreaterThan(3);
    expect([...named].filter((n) => n.startsWith('temporal_')).length).toBeGreaterThan(0);
    expect(named.size).toBeGreaterThan(15);
  }, 60_000);
});
