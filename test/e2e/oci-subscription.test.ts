import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { execa } from 'execa';
import { registryScheduleId } from '../../oci/subscription-source.js';
import { imageIdentity, type SyncImageListResult } from '../../core/workflow-contract.js';
import { ROOT, runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { fakeCloud } from '../support/fake-cloud.js';
import { egiAnnotations, startRegistry, type PushedArtifact, type TestRegistry } from '../support/registry.js';
import { startService, uniqueTaskQueue, type ServiceProcess } from '../support/service-process.js';
import { startedWorkflow } from '../support/workflows.js';

const MiB = 1024 * 1024;
const PROJECT = 'egi_vm_images';
const TAMPERED = 'tampered';
const LOCKED = 'locked';
const SITE = { user: 'site', password: randomBytes(9).toString('hex') };

/** A small bootable-looking raw disk (random bytes behind an MBR), as qcow2: what EGI pushes. */
async function qcow2Disk(dir: string, name: string): Promise<Buffer> {
  const raw = path.join(dir, `${name}.raw`);
  const qcow2 = path.join(dir, `${name}.qcow2`);
  await execa('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=2', 'status=none']);
  await writeLinuxMbr(raw, 2 * MiB);
  await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  const bytes = await readFile(qcow2);
  await rm(raw);
  await rm(qcow2);
  return bytes;
}

/**
 * A registry project as a subscription, on the same schedules as image lists. A real
 * docker-registry behind the Bearer token flow (a real token service), artifacts pushed as oras
 * pushes EGI's, the real worker and CLI; only kamaki and snf-mkimage are fakes.
 */
describe('a subscribed registry project keeps the cloud in step with its tags', () => {
  let dir: string;
  let registry: TestRegistry;
  let cloud: Awaited<ReturnType<typeof fakeCloud>>;
  let worker: ServiceProcess;
  let connection: Connection;
  let client: Client;
  let conf: string;
  let taskQueue: string;
  const pushed: Record<string, PushedArtifact> = {};
  const projectUrl = (project: string) => `${registry.url}/${project}`;
  /** The project's images carry `<host>/<project>` as the list id, spelled as an identity property (`127.0.0.1_PORT_project`). */
  const listIdentity = (project: string) =>
    imageIdentity({ origin: 'registry', imageListId: `${registry.host}/${project}`, extra: {} }).imageListId;

  const cli = (args: string[]) =>
    runCli([...args, '--conf', conf], { env: { TEMPORAL_TASK_QUEUE: taskQueue }, timeoutMs: 120_000 });
  const syncNow = (project: string) => cli(['sync-now', '--url', projectUrl(project), '--wait']);
  const ours = async (project: string) =>
    (await cloud.images()).filter(
      (i) => i.properties.VMCATCHER_IL_DC_IDENTIFIER === listIdentity(project) && !i.deleted_at,
    );
  /** `repository:sha256 prefix:public|private` of every image of the project in the cloud, sorted. */
  const cloudView = async (project = PROJECT) =>
    (await ours(project))
      .map(
        (i) =>
          `${i.properties.VMCATCHER_DC_IDENTIFIER}:${i.properties.VMCATCHER_EVENT_SL_CHECKSUM_SHA256?.slice(0, 12)}:${i.is_public ? 'public' : 'private'}`,
      )
      .sort();
  const rev = (name: string) =>
    `${name.split('@')[0]}:${pushed[name].layerDigest.slice('sha256:'.length, 'sha256:'.length + 12)}`;
  const waitForCloud = async (expected: string[], timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const view = await cloudView();
      if (JSON.stringify(view) === JSON.stringify([...expected].sort()) || Date.now() > deadline) return view;
      await new Promise((r) => setTimeout(r, 300));
    }
  };
  /** A workflow's whole history as one string, its payloads decoded (JSON text, quotes unescaped). */
  const historyText = async (workflowId: string, runId?: string) => {
    const plain = (v: unknown): unknown => {
      if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
      if (Array.isArray(v)) return v.map(plain);
      if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
      return v;
    };
    return JSON.stringify(plain(await client.workflow.getHandle(workflowId, runId).fetchHistory())).replaceAll(
      '\\"',
      '"',
    );
  };
  /** The last run of a project's schedule and its history. */
  const lastRun = async (project: string) => {
    const description = await client.schedule
      .getHandle(registryScheduleId({ registry: registry.url, project }))
      .describe();
    const run = description.info.recentActions.at(-1)!.action.workflow;
    const handle = client.workflow.getHandle(run.workflowId, run.firstExecutionRunId);
    return { run, handle, history: await handle.fetchHistory() };
  };

  beforeAll(async () => {
    await mkdir(path.join(ROOT, 'tmp'), { recursive: true });
    dir = await mkdtemp(path.join(ROOT, 'tmp', 'e2e-oci-'));
    registry = await startRegistry({ auth: 'token', users: { [SITE.user]: SITE.password } });
    pushed.ubuntu = await registry.push(`${PROJECT}/ubuntu`, {
      tags: ['22.04', '22.04-20250301-1a2b3c4'],
      disk: await qcow2Disk(dir, 'ubuntu'),
      annotations: egiAnnotations('ubuntu', '22.04'),
    });
    pushed.almalinux = await registry.push(`${PROJECT}/almalinux`, {
      tags: ['9'],
      disk: await qcow2Disk(dir, 'alma'),
      annotations: egiAnnotations('almalinux', '9'),
      config: 'oras',
    });
    // The manifest names the layer's digest; the registry then serves other bytes of the same size under it.
    const debian = await qcow2Disk(dir, 'debian');
    pushed.debian = await registry.push(`${TAMPERED}/debian`, {
      tags: ['12'],
      disk: debian,
      annotations: egiAnnotations('debian', '12'),
    });
    await registry.corruptBlob(pushed.debian.layerDigest, randomBytes(debian.length));

    cloud = await fakeCloud(dir);
    taskQueue = uniqueTaskQueue('oci');
    conf = path.join(dir, 'application.conf');
    // The test registry serves plain http on 127.0.0.1 with its token service on another port:
    // both named explicitly (plainHttpOnLoopback, tokenRealm), as no real site's would need.
    const sub = (project: string, credential: string) =>
      `{ registry = "${registry.url}", project = "${project}", credential = ${credential}, every = 8760h, cloud = "e2e", plainHttpOnLoopback = true, tokenRealm = "${registry.tokenRealm}" }`;
    await writeFile(
      conf,
      [
        `worker {\n  workingFolder = "${dir}/work"\n  heartbeatTimeoutMs = 3000\n}`,
        `security.credentials { egi-site = "${SITE.user}:${SITE.password}", wrong = "${SITE.user}:not-the-password" }`,
        cloud.synnefoConf('prepare = false\n  public = true\n  cloud = "e2e"'),
        `subscriptions = [ ${sub(PROJECT, 'egi-site')}, ${sub(TAMPERED, 'egi-site')}, ${sub(LOCKED, 'wrong')} ]`,
      ].join('\n'),
    );
    worker = await startService(['worker', '--conf', conf], { env: { TEMPORAL_TASK_QUEUE: taskQueue, ...cloud.env } });
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS });
    client = new Client({ connection });
  }, 120_000);

  afterAll(async () => {
    await worker?.stop();
    for (const project of [PROJECT, TAMPERED, LOCKED]) {
      if (registry)
        await client?.schedule
          .getHandle(registryScheduleId({ registry: registry.url, project }))
          .delete()
          .catch(() => undefined);
    }
    await registry?.close();
    await connection?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the worker made one schedule per registry project of application.conf; `subscriptions` lists them', async () => {
    const r = await cli(['subscriptions']);
    expect(r.exitCode).toBe(0);
    for (const project of [PROJECT, TAMPERED, LOCKED]) {
      expect(r.stdout).toContain(`${projectUrl(project)}  [config, registry] every 525600 min`);
      expect(r.stdout).toContain(registryScheduleId({ registry: registry.url, project }));
    }
  });

  test('first sync registers both images of the project, with their annotations as properties', async () => {
    const r = await syncNow(PROJECT);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`list ${registry.host}/${PROJECT}`);
    expect(r.stdout).toContain('2 to register: almalinux 9 (new), ubuntu 22.04 (new)');
    // Nothing known yet: every selected manifest is read whole.
    expect(r.stdout).toMatch(/\d+ registry requests \(0 conditional, 0 not modified/);
    const expected = [`${rev('ubuntu')}:public`, `${rev('almalinux')}:public`];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
    const ubuntu = (await ours(PROJECT)).find((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'ubuntu')!;
    expect(ubuntu.properties).toMatchObject({
      VMCATCHER_EVENT_SL_CHECKSUM_SHA256: pushed.ubuntu.layerDigest.slice('sha256:'.length),
      VMCATCHER_EVENT_HV_VERSION: '22.04',
      OS_DISTRO: 'ubuntu',
      OS_VERSION: '22.04',
      OS_TYPE: 'linux',
      ARCHITECTURE: 'x86_64',
      OS_ADMIN_USER: 'ubuntu',
      EU_EGI_CLOUD_TAG: '22.04-20250301-1a2b3c4',
      EU_EGI_CLOUD_DESCRIPTION: 'EGI ubuntu 22.04 image',
      ORG_OPENCONTAINERS_IMAGE_REVISION: '1a2b3c4d5e6f',
      ORG_OPENCONTAINERS_IMAGE_REF_DIGEST: pushed.ubuntu.manifestDigest,
    });
    // The registry login went to the worker by name only: in the sync's history and the registrations'.
    const { run, handle } = await lastRun(PROJECT);
    const registrations = ((await handle.result()) as SyncImageListResult).summary.registered.map((r) => r.workflowId!);
    const histories = (
      await Promise.all([
        historyText(run.workflowId, run.firstExecutionRunId),
        ...registrations.map((id) => historyText(id)),
      ])
    ).join('\n');
    expect(histories.includes('"credentialName":"egi-site"')).toBe(true);
    expect(histories.includes('"checksumSha256":"' + pushed.ubuntu.layerDigest.slice('sha256:'.length))).toBe(true);
    expect(histories.includes(SITE.password)).toBe(false);
  });

  test('a new tag for ubuntu: the next sync registers its digest, and once it is registered the sync after expires the one it replaced; almalinux untouched', async () => {
    const almaBefore = (await ours(PROJECT)).find((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'almalinux');
    pushed['ubuntu@24.04'] = await registry.push(`${PROJECT}/ubuntu`, {
      tags: ['24.04'],
      disk: await qcow2Disk(dir, 'ubuntu-24'),
      annotations: egiAnnotations('ubuntu', '24.04'),
    });
    const r = await syncNow(PROJECT);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('1 to register: ubuntu 24.04 (updated)');
    // The replaced image stays offered until its successor is registered.
    expect(r.stdout).toContain('; 0 to expire; 1 unchanged');
    // The manifests read last time (almalinux:9, ubuntu:22.04) cost a 304 each; only the new tag is read whole.
    expect(r.stdout).toMatch(/\d+ registry requests \(2 conditional, 2 not modified/);
    // One repository is one image: the older short tag naming another manifest is reported.
    expect(r.stdout).toContain(
      `${PROJECT}/ubuntu:22.04 (tags 22.04 and 24.04 of ${PROJECT}/ubuntu name different manifests`,
    );
    const meanwhile = [`${rev('ubuntu@24.04')}:public`, `${rev('ubuntu')}:public`, `${rev('almalinux')}:public`];
    expect(await waitForCloud(meanwhile)).toEqual(meanwhile.sort());
    const next = await syncNow(PROJECT);
    expect(next.exitCode).toBe(0);
    expect(next.stdout).toContain('0 to register; 1 to expire: ubuntu 22.04 (old-revision); 2 unchanged');
    const expected = [`${rev('ubuntu@24.04')}:public`, `${rev('ubuntu')}:private`, `${rev('almalinux')}:public`];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
    expect((await ours(PROJECT)).find((i) => i.properties.VMCATCHER_DC_IDENTIFIER === 'almalinux')).toEqual(almaBefore);
  });

  test("almalinux's tag left the project: the next sync expires its image; ubuntu unchanged", async () => {
    await registry.deleteManifest(`${PROJECT}/almalinux`, pushed.almalinux.manifestDigest);
    const r = await syncNow(PROJECT);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('0 to register; 1 to expire: almalinux 9 (removed); 1 unchanged');
    const expected = [`${rev('ubuntu@24.04')}:public`, `${rev('ubuntu')}:private`, `${rev('almalinux')}:private`];
    expect(await waitForCloud(expected)).toEqual(expected.sort());
  });

  test('a manifest whose layer digest does not match the bytes served: refused, nothing registered, no file left', async () => {
    const r = await syncNow(TAMPERED);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('1 to register: debian 12 (new)');
    const summary = ((await (await lastRun(TAMPERED)).handle.result()) as SyncImageListResult).summary;
    // The sync delivered it to the revision's workflow, which starts the registration in a moment.
    const registration = await startedWorkflow(client, summary.registered[0].workflowId!);
    const failure = await registration.result().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    let cause: unknown = failure;
    while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
    expect((cause as Error).message).toContain(
      `registry ${registry.host} ${TAMPERED}/debian@${pushed.debian.layerDigest}`,
    );
    expect((cause as Error).message).toContain('not the digest the manifest names; refused');
    expect(await ours(TAMPERED)).toEqual([]);
    expect(await readdir(path.join(dir, 'work')).catch(() => [])).toEqual([]);
  });

  test('wrong credentials: the sync fails at once with a permanent error naming the registry and the credential', async () => {
    const r = await syncNow(LOCKED);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`registry ${registry.host}: its token service`);
    expect(r.stderr).toContain("refused the credential 'wrong' (user site)");
    expect(r.stderr).not.toContain('not-the-password');
    const { history } = await lastRun(LOCKED);
    const started = history.events!.filter((e) => e.activityTaskStartedEventAttributes);
    const failed = history.events!.find((e) => e.activityTaskFailedEventAttributes)!.activityTaskFailedEventAttributes!;
    expect(started.map((e) => e.activityTaskStartedEventAttributes!.attempt)).toEqual([1]);
    expect(failed.failure!.applicationFailureInfo!.nonRetryable).toBe(true);
  });
});
