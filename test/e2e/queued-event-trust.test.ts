import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { execa } from 'execa';
import { temporalClient, uniqueId } from '../support/bridge.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { startTestServer, type TestServer } from '../support/http-server.js';
import { Site } from '../support/site.js';

const sha = (algorithm: string, data: Buffer) => createHash(algorithm).update(data).digest('hex');

/**
 * The trust boundary where the attack enters: a message on the queue, through the real
 * bridge and worker (`run`) into the fake Synnefo. Whoever can publish to the queue can name any
 * URL and copy any image's checksum and identity into the message; the checksum must hold
 * against the bytes, an event with none is refused by default, a credential rule's token never
 * goes over http, and the message's extra keys and control characters never become our
 * properties or reach kamaki's command line.
 */
describe('queued events are verified before anything is registered', () => {
  const token = `tok-${randomBytes(8).toString('hex')}`;
  let site: Site;
  let server: TestServer;
  let temporal: Awaited<ReturnType<typeof temporalClient>>;
  let disk: Buffer;

  beforeAll(async () => {
    site = await Site.create('trust');
    const dir = site.dir;
    const raw = path.join(dir, 'disk.raw');
    await execa('qemu-img', ['create', '-q', '-f', 'raw', raw, '8M']);
    await writeLinuxMbr(raw, 8 * 1024 * 1024);
    disk = await readFile(raw);
    const route = { file: raw };
    server = await startTestServer({
      routes: { '/evil/disk.raw': route, '/nosum/disk.raw': route, '/good/disk.raw': route },
    });
    await writeFile(path.join(dir, 'appdb.token'), `${token}\n`, { mode: 0o600 });
    // Credential rules for this very host: the old spelling (a bare host, https on 443) and its
    // port over https. The images are served over http, so neither may send the token.
    await site.start({
      command: 'run',
      conf: `security {
  credentials { appdb = { file = "${dir}/appdb.token" } }
  credentialRules = [
    { host = "127.0.0.1", credential = "appdb" },
    { origin = "https://127.0.0.1:${server.port}", credential = "appdb" }
  ]
}`,
    });
    temporal = await temporalClient();
  });

  afterAll(async () => {
    await site?.close();
    await temporal?.close();
    await server?.close();
  });

  const publish = (body: Record<string, string>) => site.publish(body);

  /** The registerImage execution of a list, once it has closed. */
  const closedRegistration = async (client: Client, listId: string, timeoutMs = 150_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for await (const wf of client.workflow.list({
        query: `ImageListIdentifier = '${listId}' AND WorkflowType = 'registerImage' AND ExecutionStatus != 'Running'`,
      }))
        return wf;
      if (Date.now() > deadline)
        throw new Error(`no closed registration of ${listId}\n${site.service!.log().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  /** The failure a registration ended with: its root cause's message, and whether it was final. */
  const failureOf = async (listId: string) => {
    const wf = await closedRegistration(temporal.client, listId);
    expect(wf.status.name).toBe('FAILED');
    const err = await temporal.client.workflow
      .getHandle(wf.workflowId, wf.runId)
      .result()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    let cause = (err as Error).cause as { message: string; cause?: unknown; nonRetryable?: boolean } | undefined;
    while (cause?.cause) cause = cause.cause as typeof cause;
    const history = await temporal.client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    const attempts = (history.events ?? []).filter((e) => e.activityTaskStartedEventAttributes).length;
    return { message: cause?.message ?? '', nonRetryable: cause?.nonRetryable, attempts };
  };

  const imagesOf = async (listId: string) =>
    (await site.cloud.images()).filter((i) => i.properties.VMCATCHER_IL_DC_IDENTIFIER === listId);

  test('a wrong sha256 (another image’s) is refused at once, naming both sums, and nothing is registered', async () => {
    const listId = uniqueId('registry-project');
    const othersSha256 = sha('sha256', randomBytes(32));
    await publish({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_DC_IDENTIFIER: 'ubuntu',
      VMCATCHER_EVENT_HV_URI: server.at('/evil/disk.raw'),
      VMCATCHER_EVENT_SL_CHECKSUM_SHA256: othersSha256,
    });
    const failure = await failureOf(listId);
    expect(failure.message).toContain(
      `sha256 mismatch: expected ${othersSha256} (VMCATCHER_EVENT_SL_CHECKSUM_SHA256), got ${sha('sha256', disk)}`,
    );
    expect(failure.nonRetryable).toBe(true);
    // findRegisteredImage, claimHost, the slot, acquireImage once, clean-up and the slot back: no second acquire.
    expect(server.requests.filter((r) => r.path === '/evil/disk.raw')).toHaveLength(1);
    expect(await imagesOf(listId)).toEqual([]);
    expect((await site.cloud.state()).invocations.filter((i) => i.argv.includes('upload'))).toEqual([]);
  });

  test('an event with no checksum is refused by default, naming security.allowUnverifiedImages, before anything is fetched', async () => {
    const listId = uniqueId('no-sum');
    await publish({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_DC_IDENTIFIER: 'debian',
      VMCATCHER_EVENT_HV_URI: server.at('/nosum/disk.raw'),
      VMCATCHER_EVENT_HV_VERSION: '12',
    });
    const failure = await failureOf(listId);
    expect(failure.message).toBe(
      `image debian of ${listId}: the event carries no checksum (VMCATCHER_EVENT_SL_CHECKSUM_SHA512 or VMCATCHER_EVENT_SL_CHECKSUM_SHA256); unverified images are refused unless security.allowUnverifiedImages = true`,
    );
    expect(failure.nonRetryable).toBe(true);
    expect(server.requests.filter((r) => r.path === '/nosum/disk.raw')).toEqual([]);
    expect(await imagesOf(listId)).toEqual([]);
  });

  test('a verified event registers with our properties only: its extra keys are ignored and its title reaches kamaki on one line', async () => {
    const listId = uniqueId('good');
    const sha512 = sha('sha512', disk);
    await publish({
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
      VMCATCHER_EVENT_DC_IDENTIFIER: 'centos',
      VMCATCHER_EVENT_DC_TITLE: 'CentOS\n--public\r9',
      VMCATCHER_EVENT_HV_URI: server.at('/good/disk.raw'),
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: sha512,
      // Keys the message adds beside the vmcatcher ones, named like ours.
      ROOT_PARTITION: '9',
      USERS: 'attacker',
      EXCLUDE_ALL_TASKS: 'yes',
      VMCATCHER_REVISION: 'forged',
      VMCATCHER_IL_DC_IDENTIFIER: 'another-list',
    });
    const wf = await closedRegistration(temporal.client, listId);
    expect(wf.status.name).toBe('COMPLETED');
    const [image] = await imagesOf(listId);
    expect(image).toBeDefined();
    // ROOT_PARTITION and USERS as snf-mkimage found them in the image (a Linux MBR, partition 1).
    expect(image.properties).toMatchObject({
      VMCATCHER_IL_DC_IDENTIFIER: listId,
      VMCATCHER_DC_IDENTIFIER: 'centos',
      VMCATCHER_REVISION: `sha512-${sha512.slice(0, 32)}`,
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: sha512,
      ROOT_PARTITION: '1',
      USERS: 'root',
      VMCATCHER_EVENT_DC_TITLE: 'CentOS --public 9',
    });
    expect(image.properties.EXCLUDE_ALL_TASKS).toBeUndefined();
    expect(image.name).toBe('CentOS --public 9');
    const register = (await site.cloud.state()).invocations.find(
      (i) => i.argv.includes('register') && i.argv.some((a) => a.includes(listId)),
    );
    expect(register).toBeDefined();
    for (const arg of register!.argv) expect(arg).not.toMatch(/[\r\n]/);
    expect(register!.argv[register!.argv.indexOf('--name') + 1]).toBe('CentOS --public 9');
  });

  test('no request to the rule’s host over http carried the token (a rule names an https origin)', () => {
    expect(server.requests.length).toBeGreaterThan(0);
    expect(server.requests.map((r) => r.headers.authorization)).toEqual(server.requests.map(() => undefined));
    expect(site.service!.log()).not.toContain(token);
  });
});
