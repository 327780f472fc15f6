import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { execa } from 'execa';
import { Agent } from 'undici';
import { GlanceClient, type GlanceImage } from '../../clouds/glance/client.js';
import { KeystoneSession } from '../../clouds/glance/keystone.js';
import { IDENTITY_PROPERTIES } from '../../core/workflow-contract.js';
import { ROOT, runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { startImageServer, type ImageServer } from '../support/image-server.js';
import { startOpenStack, type OpenStack } from '../support/openstack.js';
import { subscriptionScheduleId } from '../../subscriptions/schedules.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { createTestPki, type TestPki, type TestSigner } from '../support/test-pki.js';

/**
 * Many clouds from one deployment, through the real CLI: one subscription to a signed list goes to
 * two real Glance endpoints (two glance-api processes, their own databases, one Keystone) and the
 * Synnefo fake at once. Each revision is downloaded once for all three clouds; a Glance that is
 * down misses a run while the others get their images, and catches up later from the verified
 * file still on the host, without a second download; a removed image is expired in every cloud;
 * a cloud whose `vos` leave the list's VO out receives nothing.
 */
const LIST_ID = `many-clouds-${Math.random().toString(16).slice(2, 10)}`;
const VO = 'vo.example.org';
const MiB = 1024 * 1024;
const agent = new Agent();
let openstack: OpenStack;
let pki: TestPki;
let publisher: TestSigner;
let images: ImageServer;
let dir: string;
let conf: string;
let env: Record<string, string>;
let worker: ServiceProcess;
let connection: Connection;
let client: Client;
let synnefo: Awaited<ReturnType<typeof fakeCloud>>;
const listFile = () => path.join(dir, 'lists', 'image.list');
const listUrl = () => `file://${listFile()}`;
const disks: Record<string, { size: number; sha512: string }> = {};

function glance(region: string): GlanceClient {
  const session = new KeystoneSession({
    dispatcher: agent,
    authUrl: openstack.keystoneUrl,
    credential: {
      type: 'application-credential',
      id: openstack.demo.appCredentialId,
      secret: openstack.demo.appCredentialSecret,
    },
    interface: 'public',
    region,
  });
  return new GlanceClient({ session, dispatcher: agent });
}

/** `<image id>:<disk format>:<status>` of every image of the list our project holds in one Glance. */
async function glanceView(region: string): Promise<string[]> {
  const found: GlanceImage[] = await glance(region).findOurImages({ [IDENTITY_PROPERTIES.imageListId]: LIST_ID });
  return found.map((i) => `${String(i[IDENTITY_PROPERTIES.imageId])}:${i.disk_format}:${i.status}`).sort();
}

/** `<image id>:public|private` of every image of the list in the Synnefo fake (deleted ones left out). */
async function synnefoView(): Promise<string[]> {
  return (await synnefo.images())
    .filter((i) => i.properties[IDENTITY_PROPERTIES.imageListId] === LIST_ID && !i.deleted_at)
    .map((i) => `${i.properties[IDENTITY_PROPERTIES.imageId]}:${i.is_public ? 'public' : 'private'}`)
    .sort();
}

/** Whole GETs (no Range) the image server answered for one image. */
const downloads = (id: string) => (images.rangesByPath.get(`/${id}.qcow2`) ?? []).filter((r) => r === undefined).length;

async function publishList(version: string, ids: string[]): Promise<void> {
  const json = JSON.stringify({
    'hv:imagelist': {
      'dc:identifier': LIST_ID,
      'dc:title': 'Many clouds list',
      'dc:date:created': '2024-01-01T00:00:00Z',
      'dc:date:expires': '2499-01-01T00:00:00Z',
      'hv:version': version,
      'hv:endorser': {
        'hv:x509': { 'dc:creator': 't', 'hv:ca': pki.caDn, 'hv:dn': publisher.dn, 'hv:email': 'a@b.c' },
      },
      'hv:images': ids.map((id) => ({
        'hv:image': {
          'dc:identifier': id,
          'dc:title': `Image ${id}`,
          'hv:uri': images.at(`/${id}.qcow2`),
          'hv:size': String(disks[id].size),
          'hv:format': 'qcow2',
          'hv:version': version,
          'sl:checksum:sha512': disks[id].sha512,
        },
      })),
    },
  });
  await writeFile(listFile(), await pki.sign(json, publisher));
}

const syncNow = () => runCli(['sync-now', '--url', listUrl(), '--wait', '--conf', conf], { env, timeoutMs: 300_000 });

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${worker.log().slice(-5000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The registrations (registerImage workflows) of the list, by their ImageCloud search attribute. */
async function registrationsByCloud(): Promise<Record<string, number>> {
  const byCloud: Record<string, number> = {};
  const query = `WorkflowType = 'registerImage' AND ImageListIdentifier = '${LIST_ID}' AND ExecutionStatus = 'Completed'`;
  for await (const run of client.workflow.list({ query })) {
    const cloud = String(run.searchAttributes?.ImageCloud?.[0] ?? '(none)');
    byCloud[cloud] = (byCloud[cloud] ?? 0) + 1;
  }
  return byCloud;
}

beforeAll(async () => {
  await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
  dir = await mkdtemp(path.join(ROOT, 'tmp', 'many-clouds-'));
  await mkdir(path.join(dir, 'lists'));
  const makeDisks = async () => {
    images = await startImageServer();
    for (const id of ['a', 'b', 'c', 'd']) {
      const raw = path.join(dir, `${id}.raw`);
      await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=4', 'status=none']);
      await writeLinuxMbr(raw, 4 * MiB);
      const qcow2 = path.join(dir, `${id}.qcow2`);
      await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
      const body = await readFile(qcow2);
      images.route(`/${id}.qcow2`, { body });
      disks[id] = {
        size: body.length,
        sha512: (await execa('sha512sum', [qcow2])).stdout.split(' ')[0]!,
      };
    }
    pki = await createTestPki('Many clouds CA');
    publisher = await pki.issue('appdb.example.org');
  };
  // Keystone and two glance-api take most of the set-up: make the images meanwhile.
  [openstack] = await Promise.all([startOpenStack({ moreRegions: ['RegionTwo'] }), makeDisks()]);
  synnefo = await fakeCloud(dir);
  const secretFile = path.join(dir, 'glance-secret');
  await writeFile(secretFile, `${openstack.demo.appCredentialSecret}\n`, { mode: 0o600 });
  const glanceEntry = (region: string, formats: string) => `type = glance
    authUrl = "${openstack.keystoneUrl}"
    applicationCredentialId = "${openstack.demo.appCredentialId}"
    credential = glance
    region = ${region}
    diskFormats = [${formats}]`;
  conf = path.join(dir, 'application.conf');
  await writeFile(
    conf,
    `worker {
  workingFolder = "${dir}/work"
  heartbeatTimeoutMs = 5000
  retryInitialIntervalMs = 500
  retryMaximumIntervalMs = 2000
}
security {
  caPath = "${pki.caDir}"
  allowedFileFolders = ["${dir}/lists"]
  credentials { glance = { file = "${secretFile}" } }
}
${synnefo.synnefoConf('prepare = false')}
clouds {
  one { ${glanceEntry('RegionOne', 'qcow2, raw')} }
  two { ${glanceEntry('RegionTwo', 'raw')} }
  syn { type = synnefo, kamakiCloud = e2e }
  elsewhere { type = synnefo, kamakiCloud = e2e, vos = ["vo.somewhere-else.org"] }
}
subscriptions = [
  { url = "file://${dir}/lists/image.list", every = 8760h, vo = "${VO}", endorser { dn = "${publisher.dn}", ca = "${pki.caDn}" } }
]
`,
  );
  env = { TEMPORAL_TASK_QUEUE: uniqueTaskQueue('many-clouds'), ...synnefo.env };
  connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
  client = new Client({ connection });
  await publishList('1', ['a', 'b', 'c']);
  worker = await startService(['worker', '--conf', conf], { env });
}, 600_000);

afterAll(async () => {
  await worker?.stop();
  // The schedule the worker made from the configuration goes with the test (others list schedules).
  await client?.schedule
    .getHandle(subscriptionScheduleId(listUrl()))
    .delete()
    .catch(() => undefined);
  await images?.close();
  await connection?.close();
  await agent.close();
  await openstack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('one sync registers 3 images into two Glance clouds and Synnefo at once, each revision downloaded once; a cloud whose vos leave the VO out gets nothing; `subscriptions missing` says what each cloud lacks', async () => {
  const before = await runCli(['subscriptions', 'missing', '--conf', conf], { env, timeoutMs: 120_000 });
  expect(before.exitCode).toBe(1);
  for (const cloud of ['one', 'two', 'syn']) {
    expect(before.stdout).toContain(`${listUrl()} on ${cloud}: 3 of 3 missing:`);
  }
  expect(before.stdout).toContain('Image a 1 (a)');
  expect(before.stdout).not.toContain('elsewhere');

  const synced = await syncNow();
  expect(synced.exitCode).toBe(0);
  // Per cloud, in the run's summary: the three clouds that take the VO, not the fourth.
  expect(synced.stdout).toContain('cloud one: 3 registered, 0 expired, 0 unchanged');
  expect(synced.stdout).toContain('cloud two: 3 registered, 0 expired, 0 unchanged');
  expect(synced.stdout).toContain('cloud syn: 3 registered, 0 expired, 0 unchanged');
  expect(synced.stdout).not.toContain('cloud elsewhere');

  await waitFor('9 registrations', async () => {
    const counts = await registrationsByCloud();
    return counts['glance-one'] === 3 && counts['glance-two'] === 3 && counts['synnefo-syn'] === 3;
  });
  // Each Glance holds what it asked for: the qcow2 kept where qcow2 is taken, raw where only raw is.
  expect(await glanceView('RegionOne')).toEqual(['a:qcow2:active', 'b:qcow2:active', 'c:qcow2:active']);
  expect(await glanceView('RegionTwo')).toEqual(['a:raw:active', 'b:raw:active', 'c:raw:active']);
  expect(await synnefoView()).toEqual(['a:public', 'b:public', 'c:public']);
  // One GET per revision for three clouds, and one conversion to raw for the two clouds that take raw.
  expect(['a', 'b', 'c'].map(downloads)).toEqual([1, 1, 1]);
  const log = worker.log();
  expect(log.match(/the verified file of this revision is on the host already/g)).toHaveLength(6);
  expect(log.match(/the disk converted for raw of this revision is on the host already/g)).toHaveLength(3);
  expect(await registrationsByCloud()).not.toHaveProperty('synnefo-elsewhere');

  const after = await runCli(['subscriptions', 'missing', '--conf', conf, '--cloud', 'two'], {
    env,
    timeoutMs: 120_000,
  });
  expect(after.stdout).toBe(`${listUrl()} on two: 0 of 3 missing`);
  expect(after.exitCode).toBe(0);
}, 600_000);

test('a Glance stopped mid-sync: the other clouds finish, the next run names it FAILED; started again, it catches up from the file still on the host, with no second download and nothing registered twice', async () => {
  await publishList('2', ['a', 'b', 'c', 'd']);
  const synced = await syncNow();
  expect(synced.exitCode).toBe(0);
  for (const cloud of ['one', 'two', 'syn'])
    expect(synced.stdout).toContain(`cloud ${cloud}: 1 registered, 0 expired, 3 unchanged`);
  // The registrations of d are on their way (in whatever step): Glance two goes down now.
  const two = openstack.glances[1]!;
  await two.stop();
  await waitFor('d in Glance one and Synnefo', async () => {
    const counts = await registrationsByCloud();
    return counts['glance-one'] === 4 && counts['synnefo-syn'] === 4;
  });
  const whileDown = await syncNow();
  expect(whileDown.exitCode).toBe(0);
  expect(whileDown.stdout).toContain('cloud one: 0 registered, 0 expired, 4 unchanged');
  expect(whileDown.stdout).toContain('cloud syn: 0 registered, 0 expired, 4 unchanged');
  expect(whileDown.stdout).toMatch(/cloud two: FAILED, its images wait for the next run/);

  await two.start();
  // Its registration of d is still retrying, or failed and is delivered again by this run: either way it completes.
  const again = await syncNow();
  expect(again.exitCode).toBe(0);
  await waitFor('d in Glance two', async () => (await registrationsByCloud())['glance-two'] === 4);
  // The verified file of d was still on the host: one download for three clouds.
  expect(downloads('d')).toBe(1);
  // Nothing twice anywhere.
  expect(await glanceView('RegionOne')).toEqual([
    'a:qcow2:active',
    'b:qcow2:active',
    'c:qcow2:active',
    'd:qcow2:active',
  ]);
  expect(await glanceView('RegionTwo')).toEqual(['a:raw:active', 'b:raw:active', 'c:raw:active', 'd:raw:active']);
  expect(await synnefoView()).toEqual(['a:public', 'b:public', 'c:public', 'd:public']);
}, 600_000);

test('a list that drops an image expires it in all three clouds', async () => {
  await publishList('3', ['b', 'c', 'd']);
  const synced = await syncNow();
  expect(synced.exitCode).toBe(0);
  for (const cloud of ['one', 'two', 'syn'])
    expect(synced.stdout).toContain(`cloud ${cloud}: 0 registered, 1 expired, 3 unchanged`);
  await waitFor('a expired everywhere', async () => {
    const [one, two, syn] = await Promise.all([glanceView('RegionOne'), glanceView('RegionTwo'), synnefoView()]);
    return one.includes('a:qcow2:deactivated') && two.includes('a:raw:deactivated') && syn.includes('a:private');
  });
  expect(await synnefoView()).toEqual(['a:private', 'b:public', 'c:public', 'd:public']);
}, 600_000);

test('doctor checks every cloud of the deployment: each Glance by its own Keystone login, each Synnefo by its kamaki cloud', async () => {
  const r = await runCli(['doctor', '--conf', conf, '--json'], { env, timeoutMs: 180_000 });
  const { checks } = JSON.parse(r.stdout) as { checks: Array<{ check: string; outcome: string; detail: string }> };
  const clouds = checks.filter((c) => /cloud '/.test(c.check)).map((c) => `${c.check}: ${c.outcome}`);
  // By the clouds' names: elsewhere (kamaki cloud e2e), one, syn (kamaki cloud e2e), two.
  expect(clouds).toEqual([
    "Synnefo cloud 'e2e': ok",
    "Glance cloud 'one': ok",
    "Synnefo cloud 'e2e': ok",
    "Glance cloud 'two': ok",
  ]);
}, 300_000);
