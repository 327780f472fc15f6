import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { ApplicationFailure } from '@temporalio/common';
import { parseConfig, type Config } from '../../core/config.js';
import { eventFromFlat, type ImageEvent } from '../../core/event.js';
import { IDENTITY_PROPERTIES } from '../../core/workflow-contract.js';
import { ORIGINAL_EXCLUDED_TASKS } from '../../clouds/synnefo/image-properties.js';
import { forgetKamakiAccounts } from '../../clouds/synnefo/kamaki.js';
import type { PreparedImage } from '../../clouds/target.js';
import { createHostActivities } from '../../activities/host.js';
import { createSharedActivities } from '../../activities/shared.js';
import { runTool } from '../../runtime/tool-runner.js';
import type { ActivityDeps } from '../../runtime/deps.js';
import { asRunByWorker, workerActivityEnv } from '../support/activities.js';

/**
 * The Synnefo activities against the fake kamaki and snf-mkimage (test/fakes/), which keep
 * their state in one JSON file: prepare → register, idempotency across retries and repeats,
 * injected failures, expiry.
 */
const root = path.resolve(import.meta.dirname, '../..');
const logger = pino({ level: 'silent' });
const KAMAKI = path.join(root, 'test/fakes/kamaki');
const SHA = 'ef'.repeat(64);

let dir: string;
let stateFile: string;

/** The cloud steps as the worker runs them (on Synnefo): find and expire on the shared queue, prepare and register on the host's. */
function synnefoActivities(deps: ActivityDeps) {
  const { findRegisteredImage, expireRegisteredImages } = createSharedActivities({
    ...deps,
    temporal: () => Promise.reject(new Error('no Temporal in this test')),
  });
  const { prepareImage, registerWithKamaki } = createHostActivities(deps);
  return asRunByWorker({ findRegisteredImage, expireRegisteredImages, prepareImage, registerWithKamaki });
}

interface FakeState {
  objects: Record<string, { size: number; sha256: string }>;
  containers: Record<string, unknown>;
  images: Array<{
    id: string;
    owner: string;
    is_public: boolean;
    status: string;
    deleted_at: string;
    properties: Record<string, string>;
    location: string;
  }>;
  invocations: Array<{ tool: string; argv: string[] }>;
}
const state = (): FakeState => JSON.parse(readFileSync(stateFile, 'utf8'));
const liveImages = () => state().images.filter((i) => !i.deleted_at);

function config(synnefo: Record<string, unknown> = {}): Config {
  return parseConfig(
    {
      worker: { toolTimeoutMs: 30_000 },
      synnefo: {
        kamaki: path.join(root, 'test/fakes/kamaki'),
        snfMkimage: path.join(root, 'test/fakes/snf-mkimage'),
        sudo: [],
        cloud: 'testcloud',
        ...synnefo,
      },
    },
    'test',
  );
}

function event(imageId = 'img-1', sha = SHA): ImageEvent {
  return eventFromFlat(
    {
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list-1',
      VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
      VMCATCHER_EVENT_DC_TITLE: 'Test image',
      VMCATCHER_EVENT_HV_VERSION: '2.0',
      VMCATCHER_EVENT_SL_OS: 'Linux',
      VMCATCHER_EVENT_AD_MPURI: 'https://appdb.egi.eu/store/vo/image/test/',
      VMCATCHER_EVENT_HV_URI: 'https://example.org/test.img',
      VMCATCHER_EVENT_SL_CHECKSUM_SHA512: sha,
    },
    'image-list',
  );
}

/** A raw disk whose MBR has its Linux partition as number 2, so ROOT_PARTITION must be 2. */
function rawDisk(file: string): string {
  const b = Buffer.alloc(256 * 1024);
  b[446 + 4] = 0x82; // swap first
  b[446 + 16 + 4] = 0x83;
  b[510] = 0x55;
  b[511] = 0xaa;
  b.fill(7, 4096, 8192);
  writeFileSync(file, b);
  return file;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'synnefo-it-'));
  stateFile = path.join(dir, 'state.json');
  writeFileSync(
    path.join(dir, 'kamakirc'),
    '[cloud "testcloud"]\nurl = https://accounts.example.org/identity/v2.0\ntoken = tok\n',
  );
  process.env.FAKE_SYNNEFO_STATE = stateFile;
  process.env.FAKE_KAMAKIRC = path.join(dir, 'kamakirc');
  delete process.env.FAKE_SYNNEFO_FAIL;
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  delete process.env.FAKE_SYNNEFO_FAIL;
});

test('prepare then register twice gives exactly one image with the expected properties', async () => {
  const acts = synnefoActivities({ config: config(), logger });
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const prepared = await acts.prepareImage({
    rawPath: raw,
    workDir: path.join(dir, 'work'),
    event: event(),
    options: {},
  });
  expect(prepared.prepared).toBe(true);
  expect(existsSync(prepared.path)).toBe(true);
  expect(prepared.metadata).toMatchObject({ ROOT_PARTITION: '2', OSFAMILY: 'linux', PARTITION_TABLE: 'msdos' });
  const mk = state().invocations.find((i) => i.tool === 'snf-mkimage')!;
  expect(mk.argv).toEqual(['-o', prepared.path, '--force', '--tmpdir', path.join(dir, 'work'), raw]);

  const input = { path: prepared.path, event: event(), options: {}, metadata: prepared.metadata };
  const first = await acts.registerWithKamaki(input);
  expect(first.reused).toBe(false);
  expect(first.isPublic).toBe(true);
  expect(first.location).toMatch(/^pithos:\/\/[0-9a-f-]+\/images\/vmcatcher-list-1-img-1-sha512-/);
  const second = await acts.registerWithKamaki(input);
  expect(second).toMatchObject({ imageId: first.imageId, reused: true });

  const images = liveImages();
  expect(images).toHaveLength(1);
  const props = images[0].properties;
  expect(props).toMatchObject({
    [IDENTITY_PROPERTIES.imageListId]: 'list-1',
    [IDENTITY_PROPERTIES.imageId]: 'img-1',
    [IDENTITY_PROPERTIES.revision]: `sha512-${SHA.slice(0, 32)}`,
    OSFAMILY: 'linux',
    ROOT_PARTITION: '2',
    USERS: 'root',
    VMCATCHER_EVENT_AD_MPURI: 'https://appdb.egi.eu/store/vo/image/test/',
  });
  for (const key of ORIGINAL_EXCLUDED_TASKS) expect(props[key]).toBe('yes');
  expect(Object.keys(props).length).toBeLessThanOrEqual(32);
  expect(await acts.findRegisteredImage({ event: event(), options: {} })).toMatchObject({
    imageId: first.imageId,
    reused: true,
  });
  expect(await acts.findRegisteredImage({ event: event('other-image'), options: {} })).toBeNull();
});

test.each(['register:once', 'register:after', 'register:kill', 'upload:after'])(
  'a failure injected around upload/register (%s) then a retry leaves one image',
  async (failure) => {
    process.env.FAKE_SYNNEFO_FAIL = failure;
    const acts = synnefoActivities({ config: config({ prepare: false }), logger });
    const raw = rawDisk(path.join(dir, 'image.raw'));
    const prepared = await acts.prepareImage({ rawPath: raw, workDir: dir, event: event(), options: {} });
    expect(prepared).toEqual({ path: raw, metadata: {}, prepared: false });
    const input = { path: prepared.path, event: event(), options: {}, metadata: prepared.metadata };
    const err = await acts.registerWithKamaki(input).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(false);
    const retried = await acts.registerWithKamaki(input);
    expect(liveImages()).toHaveLength(1);
    expect(liveImages()[0].id).toBe(retried.imageId);
    // Without snf-mkimage there is no ROOT_PARTITION: never a hard-coded guess.
    expect(liveImages()[0].properties.ROOT_PARTITION).toBeUndefined();
    expect(Object.keys(state().objects).filter((k) => !k.endsWith('.meta'))).toHaveLength(1);
  },
);

test('a reused image gets the configured visibility', async () => {
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const input = { path: raw, event: event(), options: {}, metadata: {} };
  const priv = await synnefoActivities({ config: config({ public: false }), logger }).registerWithKamaki(input);
  expect(priv.isPublic).toBe(false);
  const pub = await synnefoActivities({ config: config({ public: true }), logger }).registerWithKamaki(input);
  expect(pub).toMatchObject({ imageId: priv.imageId, reused: true, isPublic: true });
  expect(liveImages()[0].is_public).toBe(true);
  const kamakiCalls = state()
    .invocations.filter((i) => i.tool === 'kamaki')
    .map((i) => i.argv);
  // image modify prints nothing: the visibility is read back to confirm it.
  expect(kamakiCalls.slice(-2)).toEqual([
    ['image', 'modify', priv.imageId, '--public', '--cloud', 'testcloud'],
    ['image', 'info', priv.imageId, '--output-format', 'json', '--cloud', 'testcloud'],
  ]);
  // findRegisteredImage (the workflow's shortcut past the upload) reconciles it too.
  const found = await synnefoActivities({ config: config({ public: false }), logger }).findRegisteredImage({
    event: event(),
    options: {},
  });
  expect(found).toMatchObject({ imageId: priv.imageId, reused: true, isPublic: false });
  expect(liveImages()[0].is_public).toBe(false);
});

test('expire makes the expired revision private by default, leaves a newer revision alone, and finding nothing succeeds', async () => {
  const acts = synnefoActivities({ config: config(), logger });
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const a = await acts.registerWithKamaki({ path: raw, event: event('img-1', SHA), options: {}, metadata: {} });
  const b = await acts.registerWithKamaki({
    path: raw,
    event: event('img-1', '12'.repeat(64)),
    options: {},
    metadata: {},
  });
  const other = await acts.registerWithKamaki({ path: raw, event: event('img-2'), options: {}, metadata: {} });
  expect(new Set([a.imageId, b.imageId, other.imageId]).size).toBe(3);

  // An update: vmcatcher expires revision SHA while revision 12… is the new one.
  const expired = await acts.expireRegisteredImages({ event: event('img-1', SHA), options: {} });
  expect(expired).toEqual({ action: 'make-private', imageIds: [a.imageId] });
  const byId = new Map(liveImages().map((i) => [i.id, i]));
  expect(byId.get(a.imageId)!.is_public).toBe(false);
  expect(byId.get(b.imageId)!.is_public).toBe(true);
  expect(byId.get(other.imageId)!.is_public).toBe(true);

  expect(await acts.expireRegisteredImages({ event: event('never-registered'), options: {} })).toEqual({
    action: 'make-private',
    imageIds: [],
  });
});

test('an expire event without a checksum names only the image: every revision of it goes private', async () => {
  const acts = synnefoActivities({ config: config(), logger });
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const a = await acts.registerWithKamaki({ path: raw, event: event('img-1', SHA), options: {}, metadata: {} });
  const b = await acts.registerWithKamaki({
    path: raw,
    event: event('img-1', '12'.repeat(64)),
    options: {},
    metadata: {},
  });
  const { checksumSha512: _drop, ...noChecksum } = event('img-1');
  const expired = await acts.expireRegisteredImages({ event: noChecksum, options: {} });
  expect(expired.imageIds.sort()).toEqual([a.imageId, b.imageId].sort());
  expect(liveImages().filter((i) => i.is_public)).toHaveLength(0);
});

test('expire with expireAction unregister removes the image', async () => {
  const acts = synnefoActivities({ config: config({ expireAction: 'unregister' }), logger });
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const a = await acts.registerWithKamaki({ path: raw, event: event(), options: {}, metadata: {} });
  expect(await acts.expireRegisteredImages({ event: event(), options: {} })).toEqual({
    action: 'unregister',
    imageIds: [a.imageId],
  });
  expect(liveImages()).toHaveLength(0);
  expect(await acts.findRegisteredImage({ event: event(), options: {} })).toBeNull();
});

test('no kamaki cloud anywhere is a non-retryable error naming the option and the key', async () => {
  const acts = synnefoActivities({ config: config({ cloud: undefined }), logger });
  const err = await acts.findRegisteredImage({ event: event(), options: {} }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ApplicationFailure);
  expect((err as ApplicationFailure).nonRetryable).toBe(true);
  expect((err as Error).message).toContain('-kamaki-cloud');
  expect((err as Error).message).toContain('synnefo.cloud');
  // The per-event option is enough.
  await expect(acts.findRegisteredImage({ event: event(), options: { kamakiCloud: 'testcloud' } })).resolves.toBeNull();
});

test("a cloud missing from .kamakirc fails with kamaki's message", async () => {
  const acts = synnefoActivities({ config: config({ cloud: 'nowhere' }), logger });
  const err = (await acts
    .findRegisteredImage({ event: event(), options: {} })
    .catch((e: unknown) => e)) as ApplicationFailure;
  expect(err.message).toContain('No cloud "nowhere"');
});

test('a step whose account look-up fails ends only after its image list has ended too: no kamaki of it runs on', async () => {
  forgetKamakiAccounts();
  // `user info` fails at once; `image list` takes a second, then leaves a mark as it ends.
  const finished = path.join(dir, 'image-list-finished');
  const slowList = path.join(dir, 'kamaki-slow-list');
  writeFileSync(
    slowList,
    `#!/bin/bash\nif [ "$1 $2" = "image list" ]; then sleep 1; "${KAMAKI}" "$@"; s=$?; touch "${finished}"; exit $s; fi\nexec "${KAMAKI}" "$@"\n`,
    { mode: 0o755 },
  );
  process.env.FAKE_SYNNEFO_FAIL = 'user:always';
  const acts = synnefoActivities({ config: config({ kamaki: slowList }), logger });
  const err = (await acts
    .findRegisteredImage({ event: event(), options: {} })
    .catch((e: unknown) => e)) as ApplicationFailure;
  expect(err).toBeInstanceOf(ApplicationFailure);
  expect(existsSync(finished)).toBe(true);
});

/** The account of the cloud "testcloud", as kamaki tells it. */
const account = () =>
  JSON.parse(
    execFileSync(KAMAKI, ['user', 'info', '--output-format', 'json', '--cloud', 'testcloud'], {
      encoding: 'utf8',
      env: { ...process.env },
    }),
  ).id as string;
/** Another tenant registers a (public) image carrying the given properties. */
const seedForeign = (properties: Record<string, string>, isPublic = true) =>
  JSON.parse(
    execFileSync('node', [path.join(root, 'test/fakes/lib/seed-image.js'), JSON.stringify({ properties, isPublic })], {
      encoding: 'utf8',
      env: { ...process.env },
    }),
  ) as {
    id: string;
    owner: string;
  };

describe('only images of our own account count', () => {
  const identity = (imageId = 'img-1', sha = SHA) => ({
    [IDENTITY_PROPERTIES.imageListId]: 'list-1',
    [IDENTITY_PROPERTIES.imageId]: imageId,
    [IDENTITY_PROPERTIES.revision]: `sha512-${sha.slice(0, 32)}`,
  });

  test("another tenant's public image with our identity is neither reused nor expired", async () => {
    const theirs = seedForeign(identity());
    const acts = synnefoActivities({ config: config(), logger });
    expect(await acts.findRegisteredImage({ event: event(), options: {} })).toBeNull();

    const ours = await acts.registerWithKamaki({
      path: rawDisk(path.join(dir, 'image.raw')),
      event: event(),
      options: {},
      metadata: {},
    });
    expect(ours.reused).toBe(false);
    expect(ours.imageId).not.toBe(theirs.id);
    const me = account();
    expect(liveImages().find((i) => i.id === ours.imageId)).toMatchObject({ owner: me, is_public: true });
    expect(await acts.findRegisteredImage({ event: event(), options: {} })).toMatchObject({
      imageId: ours.imageId,
      reused: true,
    });

    expect(await acts.expireRegisteredImages({ event: event(), options: {} })).toEqual({
      action: 'make-private',
      imageIds: [ours.imageId],
    });
    const byId = new Map(liveImages().map((i) => [i.id, i]));
    expect(byId.get(ours.imageId)!.is_public).toBe(false);
    expect(byId.get(theirs.id)).toMatchObject({ owner: theirs.owner, is_public: true, status: 'AVAILABLE' });
    // No kamaki command ever named their image.
    expect(state().invocations.filter((i) => i.argv.includes(theirs.id))).toEqual([]);
  });

  test('with expireAction unregister, only our revision goes; theirs stays registered', async () => {
    const theirs = seedForeign(identity());
    const acts = synnefoActivities({ config: config({ expireAction: 'unregister' }), logger });
    const ours = await acts.registerWithKamaki({
      path: rawDisk(path.join(dir, 'image.raw')),
      event: event(),
      options: {},
      metadata: {},
    });
    const { checksumSha512: _drop, ...noChecksum } = event();
    expect(await acts.expireRegisteredImages({ event: noChecksum, options: {} })).toEqual({
      action: 'unregister',
      imageIds: [ours.imageId],
    });
    expect(liveImages().map((i) => i.id)).toEqual([theirs.id]);
  });

  test('the account is asked once per worker and cloud; a failed look-up is asked again', async () => {
    forgetKamakiAccounts();
    process.env.FAKE_SYNNEFO_FAIL = 'user:once';
    const acts = synnefoActivities({ config: config(), logger });
    const first = (await acts
      .findRegisteredImage({ event: event(), options: {} })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(first).toBeInstanceOf(ApplicationFailure);
    expect(first.nonRetryable).toBe(false);
    await acts.findRegisteredImage({ event: event(), options: {} });
    await acts.registerWithKamaki({
      path: rawDisk(path.join(dir, 'image.raw')),
      event: event(),
      options: {},
      metadata: {},
    });
    await acts.expireRegisteredImages({ event: event(), options: {} });
    const userInfo = state().invocations.filter((i) => i.argv[0] === 'user' && i.argv[1] === 'info');
    expect(userInfo).toHaveLength(2);
  });
});

describe('kamaki as it really is', () => {
  test('the container is created before the first upload (real kamaki does not), and an existing one is fine', async () => {
    const acts = synnefoActivities({ config: config({ prepare: false }), logger });
    const raw = rawDisk(path.join(dir, 'image.raw'));
    const a = await acts.registerWithKamaki({ path: raw, event: event('img-1'), options: {}, metadata: {} });
    const b = await acts.registerWithKamaki({ path: raw, event: event('img-2'), options: {}, metadata: {} });
    expect(a.location).toMatch(/\/images\/vmcatcher-list-1-img-1-/);
    expect(b.location).toMatch(/\/images\/vmcatcher-list-1-img-2-/);
    expect(Object.keys(state().containers)).toEqual([`${account()}/images`]);
    const calls = state()
      .invocations.filter((i) => i.tool === 'kamaki')
      .map((i) => `${i.argv[0]} ${i.argv[1]}`);
    expect(calls.indexOf('container create')).toBeLessThan(calls.indexOf('file upload'));
  });

  test('a kamaki that prints "Syntax error" and exits 0 fails the step at once, naming the command; nothing is registered', async () => {
    // An older kamaki that does not know an option: it says so on stdout and exits 0.
    const wrapper = path.join(dir, 'old-kamaki');
    writeFileSync(
      wrapper,
      `#!/bin/sh\ncase " $* " in *" upload "*) exec "${KAMAKI}" "$@" --not-in-this-version ;; esac\nexec "${KAMAKI}" "$@"\n`,
      { mode: 0o755 },
    );
    const acts = synnefoActivities({ config: config({ kamaki: wrapper, prepare: false }), logger });
    const err = (await acts
      .registerWithKamaki({ path: rawDisk(path.join(dir, 'image.raw')), event: event(), options: {}, metadata: {} })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toContain('kamaki file upload');
    expect(err.message).toContain('Syntax error');
    expect(liveImages()).toHaveLength(0);
    expect(state().invocations.some((i) => i.argv[0] === 'image' && i.argv[1] === 'register')).toBe(false);
  });

  test('a kamaki list that prints "Syntax error" instead of JSON is a permanent failure, not "invalid JSON" retried forever', async () => {
    const wrapper = path.join(dir, 'old-kamaki');
    writeFileSync(wrapper, `#!/bin/sh\nexec "${KAMAKI}" "$@" --json\n`, { mode: 0o755 });
    const acts = synnefoActivities({ config: config({ kamaki: wrapper }), logger });
    const err = (await acts
      .findRegisteredImage({ event: event(), options: {} })
      .catch((e: unknown) => e)) as ApplicationFailure;
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(/kamaki (user info|image list) refused its command line .*Syntax error/);
  });
});

test('snf-mkimage failures: unsupported media fails, a killed run is transient', async () => {
  const acts = synnefoActivities({ config: config(), logger });
  const blank = path.join(dir, 'blank.raw');
  writeFileSync(blank, Buffer.alloc(8192));
  const unsupported = (await acts
    .prepareImage({ rawPath: blank, workDir: dir, event: event(), options: {} })
    .catch((e: unknown) => e)) as ApplicationFailure;
  expect(unsupported.message).toContain('unsupported');

  process.env.FAKE_SYNNEFO_FAIL = 'mkimage:kill';
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const killed = (await acts
    .prepareImage({ rawPath: raw, workDir: dir, event: event(), options: {} })
    .catch((e: unknown) => e)) as ApplicationFailure;
  expect(killed.message).toContain('SIGKILL');
  expect(killed.nonRetryable).toBe(false);
  await expect(acts.prepareImage({ rawPath: raw, workDir: dir, event: event(), options: {} })).resolves.toMatchObject({
    prepared: true,
  });
});

test('with synnefo.allowUnsupported, media snf-mkimage cannot recognise is prepared with every deployment task excluded', async () => {
  const acts = synnefoActivities({ config: config({ allowUnsupported: true }), logger });
  const blank = path.join(dir, 'blank-allowed.raw');
  writeFileSync(blank, Buffer.alloc(8192));
  const prepared = await acts.prepareImage({ rawPath: blank, workDir: dir, event: event(), options: {} });
  expect(prepared).toMatchObject({ prepared: true, metadata: { EXCLUDE_ALL_TASKS: 'yes' } });
  expect(state().invocations.at(-1)!.argv).toContain('--allow-unsupported');
});

test('snf-mkimage and the upload heartbeat with their step name in the details', async () => {
  const acts = synnefoActivities({ config: config(), logger });
  const raw = rawDisk(path.join(dir, 'image.raw'));
  const env = workerActivityEnv();
  const beats: Array<Record<string, unknown>> = [];
  env.on('heartbeat', (d: Record<string, unknown>) => beats.push(d));
  const prepared: PreparedImage = await env.run(acts.prepareImage, {
    rawPath: raw,
    workDir: path.join(dir, 'work'),
    event: event(),
    options: {},
  });
  await env.run(acts.registerWithKamaki, {
    path: prepared.path,
    event: event(),
    options: {},
    metadata: prepared.metadata,
  });
  expect(beats).toContainEqual(expect.objectContaining({ step: 'snf-mkimage', bytesTotal: 256 * 1024 }));
  expect(beats).toContainEqual(expect.objectContaining({ step: 'kamaki file upload', bytesTotal: 256 * 1024 }));
});

test('looking for the image and expiring it heartbeat too, so a worker dying mid-question is noticed', async () => {
  const acts = synnefoActivities({ config: config(), logger });
  const env = workerActivityEnv({ heartbeatTimeoutMs: 400 });
  const beats: Array<Record<string, unknown>> = [];
  env.on('heartbeat', (d: Record<string, unknown>) => beats.push(d));
  await env.run(acts.findRegisteredImage, { event: event(), options: {} });
  await env.run(acts.expireRegisteredImages, { event: event(), options: {} });
  expect(beats).toContainEqual({ step: 'look for the image on the cloud' });
  expect(beats).toContainEqual({ step: 'expire the image on the cloud' });
});

test('the tool runner kills the program on cancellation and on timeout', async () => {
  const controller = new AbortController();
  const started = Date.now();
  const run = runTool({
    tool: 'sleep',
    command: 'sleep',
    args: ['30'],
    timeoutMs: 60_000,
    logger,
    cancelSignal: controller.signal,
  });
  setTimeout(() => controller.abort(), 200);
  await expect(run).rejects.toThrow('sleep was cancelled');
  await expect(runTool({ tool: 'sleep', command: 'sleep', args: ['30'], timeoutMs: 300, logger })).rejects.toThrow(
    /timed out after 300 ms/,
  );
  expect(Date.now() - started).toBeLessThan(10_000);
});
