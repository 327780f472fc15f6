import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { SYNC_WORKFLOW } from '../../core/workflow-contract.js';
import { freePort } from '../support/bridge.js';
import { ROOT, runCli } from '../support/cli.js';
import { fakeCloud } from '../support/fake-cloud.js';
import {
  generateSelfSignedCertificate,
  startTestServer,
  type SelfSignedCertificate,
  type TestServer,
} from '../support/http-server.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { startDevServer, stopDevServer, waitForDevServer } from '../support/temporal-server.js';
import { createTestPki, type TestPki } from '../support/test-pki.js';
import { servedDisk } from '../support/throttled-file-server.js';

const MiB = 1024 * 1024;
const LIST_ID = 'web-ui-list';
const TITLES = { a: 'Web UI Alpine 3.20', b: 'Web UI Debian 12' } as const;
/** Chromium from Debian (scripts/setup.sh installs it); flags that keep it off the network it has no business with. */
const CHROMIUM = process.env.SNF_VMCATCHER_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

type Disk = Awaited<ReturnType<typeof servedDisk>>;

/**
 * An operator reads the Web UI as a list of images and runs. A dev server of
 * its own with its Web UI (2.42, as the Temporal CLI embeds it), the real worker and CLI, a
 * subscribed list served over HTTPS and signed at test time, the fake cloud; then headless
 * Chromium looks at the pages an operator would open.
 */
describe("Web UI: the workflows of a sync show their images' titles, a sync run shows what it changed", () => {
  let dir: string;
  let server: ReturnType<typeof startDevServer> | undefined;
  let address: string;
  let ui: string;
  let pki: TestPki;
  let cert: SelfSignedCertificate;
  let lists: TestServer;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let worker: ServiceProcess | undefined;
  let connection: Connection | undefined;
  let client: Client;
  let browser: BrowserContext | undefined;
  let page: Page;
  let syncRun: { workflowId: string; runId: string };
  const disks: Record<string, Disk> = {};

  const shot = (name: string) =>
    page.screenshot({ path: path.join(ROOT, 'tmp', `web-ui-${name}.png`), fullPage: true });

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-web-ui-'));
    const [port, uiPort] = [await freePort(), await freePort()];
    address = `127.0.0.1:${port}`;
    ui = `http://127.0.0.1:${uiPort}`;
    server = startDevServer(port, path.join(dir, 'temporal.db'), { uiPort });
    pki = await createTestPki('Web UI CA');
    const publisher = await pki.issue('appdb.example.org');
    cert = await generateSelfSignedCertificate('localhost');
    lists = await startTestServer({ tls: cert, hostname: 'localhost' });
    for (const id of ['a', 'b'] as const) disks[id] = await servedDisk(dir, `${id}.raw`, 1, 256 * MiB);
    const entry = (id: 'a' | 'b') => ({
      'hv:image': {
        'dc:identifier': id,
        'dc:title': TITLES[id],
        'hv:uri': disks[id].url,
        'hv:size': String(disks[id].size),
        'hv:format': 'raw',
        'hv:version': '1',
        'sl:checksum:sha512': disks[id].sha512,
      },
    });
    const list = JSON.stringify({
      'hv:imagelist': {
        'dc:identifier': LIST_ID,
        'dc:title': 'Web UI list',
        'dc:date:created': '2024-01-01T00:00:00Z',
        'dc:date:expires': '2499-01-01T00:00:00Z',
        'hv:version': '1',
        'hv:endorser': {
          'hv:x509': { 'dc:creator': 'test', 'hv:ca': pki.caDn, 'hv:dn': publisher.dn, 'hv:email': 'a@b.c' },
        },
        'hv:images': [entry('a'), entry('b')],
      },
    });
    lists.route('/image.list', { body: await pki.sign(list, publisher), etag: '"v1"' });
    cloud = await fakeCloud(dir);
    const conf = path.join(dir, 'application.conf');
    // Synced by the test alone: a yearly schedule (intervals are aligned to the epoch) never fires mid-test.
    const subscription = `{ url = "${lists.at('/image.list')}", every = 8760h, cloud = "e2e", vo = "ui.example.org", endorser { dn = "${publisher.dn}", ca = "${pki.caDn}" } }`;
    await writeFile(
      conf,
      `worker {\n  workingFolder = "${dir}/work"\n}\nsecurity { caPath = "${pki.caDir}" }\n${cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "e2e"')}\nsubscriptions = [ ${subscription} ]\n`,
    );
    const env = {
      TEMPORAL_ADDRESS: address,
      TEMPORAL_TASK_QUEUE: uniqueTaskQueue('web-ui'),
      NODE_EXTRA_CA_CERTS: cert.certPath,
    };
    await waitForDevServer(address);
    worker = await startService(['worker', '--conf', conf], { env: { ...env, ...cloud.env } });

    const synced = await runCli(['sync-now', '--url', lists.at('/image.list'), '--wait', '--conf', conf], {
      env,
      timeoutMs: 60_000,
    });
    if (synced.exitCode !== 0) throw new Error(`sync-now failed (${synced.exitCode}): ${synced.stderr.slice(-2000)}`);
    expect(synced.stdout).toContain(`2 to register: ${TITLES.a} 1 (new), ${TITLES.b} 1 (new)`);

    connection = await Connection.connect({ address });
    client = new Client({ connection });
    for await (const run of client.workflow.list({ query: `WorkflowType = '${SYNC_WORKFLOW}'` }))
      syncRun = { workflowId: run.workflowId, runId: run.runId };
    // The registrations end before the browser looks, so the list holds their final state.
    const deadline = Date.now() + 60_000;
    while ((await cloud.images()).filter((i) => !i.deleted_at).length < 2 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 500));

    browser = await chromium.launchPersistentContext(path.join(dir, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1600, height: 1000 },
    });
    page = await browser.newPage();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await worker?.stop();
    await connection?.close();
    await stopDevServer(server);
    for (const disk of Object.values(disks)) await disk.server.close();
    await lists?.close();
    await cert?.cleanup();
    await pki?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  test("the workflow list of the sync's image list, with the ImageTitle column added, shows each image's title", async () => {
    const query = encodeURIComponent(`ImageListIdentifier = "${LIST_ID}"`);
    await page.goto(`${ui}/namespaces/default/workflows?query=${query}`, { waitUntil: 'load' });
    // 2.42 offers no summary column; an operator adds the ImageTitle search attribute's column once (the UI remembers it).
    await page.getByTestId('workflows-summary-table-configuration-button').click();
    await page.getByRole('button', { name: 'Add ImageTitle column' }).click();
    // …and moves it next to the status, where it fits on the screen beside the long workflow ids.
    for (let i = 0; i < 5; i++) await page.getByRole('button', { name: 'Move ImageTitle column up' }).click();
    await page.getByRole('button', { name: 'Close Workflows Table configuration' }).click();
    const table = page.locator('table');
    await table.getByRole('columnheader', { name: 'ImageTitle' }).waitFor({ timeout: 15_000 });
    await shot('list');
    // Each image has its imageRevision and registerImage workflows; every one of their rows names the image by its title.
    for (const [id, title] of Object.entries(TITLES)) {
      const rows = table.locator('tbody tr').filter({ hasText: `:${LIST_ID}:${id}:` });
      await expect(rows.first().waitFor({ timeout: 15_000 })).resolves.toBeUndefined();
      expect(await rows.count()).toBeGreaterThanOrEqual(2);
      for (const row of await rows.all()) {
        const cell = row.getByText(title, { exact: true });
        await expect(cell.isVisible()).resolves.toBe(true);
        // On screen, not scrolled out of the table's view.
        const box = await cell.boundingBox();
        expect(box && box.x >= 0 && box.x + box.width <= page.viewportSize()!.width).toBe(true);
      }
    }
  });

  /**
   * The texts of the page's markdown blocks (summary, details, current details), each rendered in a
   * frame of its own when it is ready: read again until one of them is `wanted` or `ms` have passed,
   * as a person looking at the page would see it a moment later.
   */
  const frameTexts = async (wanted: (text: string) => boolean, ms: number) => {
    const read = () =>
      Promise.all(
        page
          .frames()
          .filter((f) => f !== page.mainFrame())
          .map((f) =>
            f
              .locator('body')
              .innerText()
              .catch(() => ''),
          ),
      );
    const deadline = Date.now() + ms;
    let texts = await read();
    while (!texts.some(wanted) && Date.now() < deadline) {
      await page.waitForTimeout(250);
      texts = await read();
    }
    return texts;
  };

  test("the sync run's User Metadata shows its summary and, as current details, what it changed", async () => {
    await page.goto(
      `${ui}/namespaces/default/workflows/${encodeURIComponent(syncRun.workflowId)}/${syncRun.runId}/user-metadata`,
      { waitUntil: 'load' },
    );
    // Current Details come from the run itself (setCurrentDetails), asked of the worker.
    const texts = await frameTexts((t) => t.includes('2 registered'), 20_000);
    await shot('sync-run');
    const main = await page.locator('main').innerText();
    expect(main).toContain('Summary');
    expect(main).toContain('Current Details');
    expect(texts.map((t) => t.trim())).toContain(`Sync of the image list ${lists.at('/image.list')}`);
    const current = texts.find((t) => t.includes('2 registered')) ?? texts.join('\n---\n');
    expect(current).toContain(`${LIST_ID} version 1 (read and verified): 2 registered, 0 expired, 0 unchanged`);
    expect(current).toMatch(new RegExp(`Registered:\\s+${TITLES.a} 1 \\(new\\)\\s+${TITLES.b} 1 \\(new\\)\\s*$`));
  });

  test("a registration's User Metadata names the image and lists its steps by what they did", async () => {
    let id = { workflowId: '', runId: '' };
    for await (const run of client.workflow.list({ query: `WorkflowType = 'registerImage' AND ImageIdentifier = 'a'` }))
      id = run;
    await page.goto(
      `${ui}/namespaces/default/workflows/${encodeURIComponent(id.workflowId)}/${id.runId}/user-metadata`,
      { waitUntil: 'load' },
    );
    await page.getByText('upload and register').waitFor({ timeout: 15_000 });
    const blocks = await frameTexts((t) => t.trim() === 'Stage done', 15_000);
    await shot('registration');
    expect(blocks.map((t) => t.trim())).toContain(`Register ${TITLES.a} 1 of ${LIST_ID} on synnefo-e2e`);
    const details = blocks.find((t) => t.includes('Image list')) ?? blocks.join('\n---\n');
    expect(blocks.map((t) => t.trim())).toContain('Stage done');
    for (const line of [
      `Title: ${TITLES.a}`,
      `Image list: ${LIST_ID}`,
      'VO: ui.example.org',
      `sha512 ${disks.a.sha512.slice(0, 16)}`,
      'Target: synnefo-e2e',
    ])
      expect(details).toContain(line);
    const steps = await page.locator('main').innerText();
    for (const step of [
      `download ${disks.a.url}`,
      'detect the format of a.raw',
      'convert raw → raw (kept)',
      'upload and register',
    ])
      expect(steps).toContain(step);
  });
});
