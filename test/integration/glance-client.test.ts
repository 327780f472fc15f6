import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { ImageIntegrityError } from '../../core/errors.js';
import { eventFromFlat, type EventOrigin } from '../../core/event.js';
import { identityFilter } from '../../clouds/identity.js';
import { IDENTITY_PROPERTIES } from '../../core/workflow-contract.js';
import { GlanceClient, type UploadResult } from '../../clouds/glance/client.js';
import { CloudApiError } from '../../clouds/glance/errors.js';
import { KeystoneSession } from '../../clouds/glance/keystone.js';
import { buildGlanceProperties, GLANCE_TAG, VERIFIED_PROPERTY } from '../../clouds/glance/properties.js';
import {
  expireInGlance,
  findGlanceImage,
  inventoryInGlance,
  publishToGlance,
  type GlanceSettings,
} from '../../clouds/glance/registration.js';
import { pino } from 'pino';
import { REGION, startOpenStack, type OpenStack } from '../support/openstack.js';

/**
 * The Glance client against Debian's real glance-api 25 behind Debian's real Keystone 22
 * (test/support/openstack.ts): application-credential and password auth, records, streamed
 * uploads, hash checks, finding by identity and owner, visibility, members, deactivation,
 * deletion, what a crashed upload leaves, another project's look-alike images, 401s and
 * token renewal.
 */
const TOKEN_SECONDS = 3600;
let cloud: OpenStack;
let dir: string;
let smallFile: string;
let bigFile: string;
/** One connection pool for every client here, closed at the end so no socket outlives the file. */
const agent = new Agent();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'snf-glance-test-'));
  smallFile = path.join(dir, 'small.img');
  writeFileSync(smallFile, randomBytes(3 * 1024 * 1024 + 17));
  bigFile = path.join(dir, 'big.img');
  writeFileSync(bigFile, randomBytes(48 * 1024 * 1024));
  cloud = await startOpenStack({ tokenExpirationSeconds: TOKEN_SECONDS });
  // Measured start-up of Keystone + glance-api, per phase (seconds).
  console.log(`openstack start-up: ${JSON.stringify(cloud.timings)}`);
}, 420_000);

afterAll(async () => {
  await agent.close();
  await cloud?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

type Account = OpenStack['demo'];
function appCredentialSession(
  account: Account,
  opts: { region?: string; iface?: 'public' | 'internal' } = {},
): KeystoneSession {
  return new KeystoneSession({
    dispatcher: agent,
    authUrl: cloud.keystoneUrl,
    credential: { type: 'application-credential', id: account.appCredentialId, secret: account.appCredentialSecret },
    interface: opts.iface ?? 'public',
    region: opts.region ?? REGION,
  });
}
function passwordSession(user: { username: string; password: string; projectName: string }): KeystoneSession {
  return new KeystoneSession({
    dispatcher: agent,
    authUrl: cloud.keystoneUrl,
    credential: {
      type: 'password',
      username: user.username,
      userDomain: 'Default',
      password: user.password,
      project: user.projectName,
      projectDomain: 'Default',
    },
    interface: 'public',
    region: REGION,
  });
}
const demoClient = () => new GlanceClient({ session: appCredentialSession(cloud.demo), dispatcher: agent });
const otherClient = () => new GlanceClient({ session: appCredentialSession(cloud.other), dispatcher: agent });

let serial = 0;
/** An image of a subscription (origin image-list) unless told otherwise: its VO is the list's or the subscription's. */
function event(imageId = `img-${++serial}-${randomBytes(3).toString('hex')}`, origin: EventOrigin = 'image-list') {
  return eventFromFlat(
    {
      VMCATCHER_EVENT_IL_DC_IDENTIFIER: 'list-glance-tests',
      VMCATCHER_EVENT_DC_IDENTIFIER: imageId,
      VMCATCHER_EVENT_DC_TITLE: 'Ubuntu 22.04 test image',
      VMCATCHER_EVENT_DC_DESCRIPTION: 'An image for the Glance client tests',
      VMCATCHER_EVENT_HV_VERSION: '22.04-1',
      VMCATCHER_EVENT_AD_MPURI: 'https://appdb.example.org/store/vm/image/abc:1/',
      VMCATCHER_EVENT_SL_OS: 'Linux',
      VMCATCHER_EVENT_SL_OSNAME: 'Ubuntu',
      VMCATCHER_EVENT_SL_OSVERSION: '22.04',
      VMCATCHER_EVENT_SL_ARCH: 'amd64',
      VMCATCHER_EVENT_VO: 'vo.example.org',
    },
    origin,
  );
}

/** Creates a record with the event's properties (not uploaded). */
async function createFor(client: GlanceClient, ev = event(), visibility: 'private' | 'shared' = 'private') {
  const { properties } = buildGlanceProperties({ event: ev });
  const image = await client.createImage({
    name: `test ${ev.imageId}`,
    diskFormat: 'raw',
    containerFormat: 'bare',
    visibility,
    properties,
    tags: [GLANCE_TAG],
  });
  return { ev, image, properties };
}

async function createUploaded(client: GlanceClient, ev = event(), file = smallFile) {
  const created = await createFor(client, ev);
  const sent = await client.uploadFile(created.image.id, file);
  const image = await client.verifyUpload(created.image.id, sent);
  return { ...created, image, sent };
}

describe('records, uploads and hashes', () => {
  test('an image record is created with the EGI properties and our identity, owned by our project, queued until data arrives', async () => {
    const client = demoClient();
    const { image, ev } = await createFor(client);
    expect(image.status).toBe('queued');
    expect(image.owner).toBe(cloud.demo.projectId);
    expect(image.tags).toEqual([GLANCE_TAG]);
    expect(image).toMatchObject({
      os_distro: 'ubuntu',
      os_version: '22.04',
      architecture: 'x86_64',
      os_type: 'linux',
      vmcatcher_event_dc_title: 'Ubuntu 22.04 test image',
      vmcatcher_event_ad_mpuri: 'https://appdb.example.org/store/vm/image/abc:1/',
      APPLIANCE_ID: ev.imageId,
      APPLIANCE_IMAGE_LIST_ID: 'list-glance-tests',
      APPLIANCE_VO: 'vo.example.org',
      [IDENTITY_PROPERTIES.imageId]: ev.imageId,
      [IDENTITY_PROPERTIES.imageListId]: 'list-glance-tests',
    });
    expect(JSON.parse(String(image.APPLIANCE_ATTRIBUTES))).toMatchObject({
      'ad:mpuri': ev.mpUri,
      'dc:identifier': ev.imageId,
    });
  });

  test('an upload streams the file with progress, and Glance computed the same size, md5 and sha512 as we did', async () => {
    const client = demoClient();
    const { image } = await createFor(client);
    const progress: number[] = [];
    const sent = await client.uploadFile(image.id, smallFile, {
      onProgress: (done, total) => progress.push(done / total),
    });
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.at(-1)).toBe(1);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    const data = await import('node:fs/promises').then((fs) => fs.readFile(smallFile));
    expect(sent).toEqual({
      size: data.length,
      md5: createHash('md5').update(data).digest('hex'),
      hashAlgo: 'sha512',
      hashValue: createHash('sha512').update(data).digest('hex'),
    });
    const verified = await client.verifyUpload(image.id, sent);
    expect(verified).toMatchObject({
      status: 'active',
      size: data.length,
      os_hash_algo: 'sha512',
      os_hash_value: sent.hashValue,
      checksum: sent.md5,
    });
  });

  test('verification refuses an image whose stored hash, size or hash algorithm is not what we sent', async () => {
    const client = demoClient();
    const { image, sent } = await createUploaded(client);
    const wrong: UploadResult[] = [
      { ...sent, hashValue: 'f'.repeat(128) },
      { ...sent, size: sent.size + 1 },
      { ...sent, hashAlgo: 'sha256', hashValue: 'a'.repeat(64) },
    ];
    for (const claim of wrong)
      await expect(client.verifyUpload(image.id, claim)).rejects.toBeInstanceOf(ImageIntegrityError);
    await expect(client.verifyUpload(image.id, { ...sent, hashValue: '0'.repeat(128) })).rejects.toThrow(
      /os_hash_value \(sha512\) is [0-9a-f]{128}, we sent 0+/,
    );
  });
});

describe('finding our images', () => {
  test('images are found by identity properties and our project as owner, in any status and visibility', async () => {
    const client = demoClient();
    const ev = event();
    const { image } = await createUploaded(client, ev);
    await client.setVisibility(image.id, 'community');
    const queued = await createFor(client, ev);
    const found = await client.findOurImages(identityFilter(ev));
    expect(found.map((i) => i.id).sort()).toEqual([image.id, queued.image.id].sort());
    expect(await client.findOurImages(identityFilter(event()))).toEqual([]);
  });

  test("another project's images carrying our identity properties are never found, cleaned up or touched", async () => {
    const client = demoClient();
    const other = otherClient();
    const admin = new GlanceClient({ session: passwordSession(cloud.admin), dispatcher: agent });
    const ev = event();
    // The other tenant has a queued record and an active image with exactly our identity; the
    // cloud's admin a public one, which our project can see in its image list.
    const othersQueued = await createFor(other, ev);
    const othersActive = await createUploaded(other, ev);
    const adminsPublic = await createUploaded(admin, ev);
    await admin.setVisibility(adminsPublic.image.id, 'public');
    const visibleToUs = await request(`${cloud.glanceUrl}/v2/images?${new URLSearchParams(identityFilter(ev))}`, {
      headers: { 'x-auth-token': await appCredentialSession(cloud.demo).token() },
      dispatcher: agent,
    }).then((r) => r.body.json() as Promise<{ images: Array<{ id: string }> }>);
    expect(visibleToUs.images.map((i) => i.id)).toContain(adminsPublic.image.id);

    expect(await client.findOurImages(identityFilter(ev))).toEqual([]);
    expect(await client.deleteIncomplete(identityFilter(ev))).toEqual([]);
    // Glance does not even show us the other tenant's private image by id.
    expect(await client.getImage(othersActive.image.id)).toBeUndefined();
    expect((await other.getImage(othersQueued.image.id))?.status).toBe('queued');
    expect((await other.getImage(othersActive.image.id))?.status).toBe('active');
    expect((await admin.getImage(adminsPublic.image.id))?.status).toBe('active');
  });
});

describe('visibility, members, deactivation, deletion', () => {
  test('visibility moves between private, shared, community and back; public needs the admin role and says so', async () => {
    const client = demoClient();
    const { image } = await createUploaded(client);
    for (const v of ['shared', 'community', 'private'] as const) {
      expect((await client.setVisibility(image.id, v)).visibility).toBe(v);
      expect((await client.getImage(image.id))?.visibility).toBe(v);
    }
    const refused = await client.setVisibility(image.id, 'public').catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(CloudApiError);
    expect((refused as CloudApiError).status).toBe(403);
    expect((refused as Error).message).toMatch(/publicize_image policy needs the admin role/);
    expect((await client.getImage(image.id))?.visibility).toBe('private');

    const admin = new GlanceClient({ session: passwordSession(cloud.admin), dispatcher: agent });
    const adminImage = await createUploaded(admin);
    expect((await admin.setVisibility(adminImage.image.id, 'public')).visibility).toBe('public');
    await admin.deleteImage(adminImage.image.id);
  });

  test("a shared image's member project can use it; removing the member takes it away", async () => {
    const client = demoClient();
    const other = otherClient();
    const { image } = await createUploaded(client);
    await client.setVisibility(image.id, 'shared');
    await client.addMember(image.id, cloud.other.projectId);
    await client.addMember(image.id, cloud.other.projectId); // already a member: fine
    expect(await client.members(image.id)).toEqual([
      expect.objectContaining({ member_id: cloud.other.projectId, status: 'pending' }),
    ]);
    expect((await other.getImage(image.id))?.id).toBe(image.id);

    await other.setMemberStatus(image.id, 'accepted');
    expect((await client.members(image.id))[0].status).toBe('accepted');
    const listed = await request(
      `${cloud.glanceUrl}/v2/images?${new URLSearchParams(identityFilter({ ...event(), imageId: String(image[IDENTITY_PROPERTIES.imageId]) }))}`,
      {
        headers: { 'x-auth-token': await appCredentialSession(cloud.other).token() },
        dispatcher: agent,
      },
    ).then((r) => r.body.json() as Promise<{ images: Array<{ id: string }> }>);
    expect(listed.images.map((i) => i.id)).toEqual([image.id]);

    await client.removeMember(image.id, cloud.other.projectId);
    expect(await client.members(image.id)).toEqual([]);
    expect(await other.getImage(image.id)).toBeUndefined();
  });

  test('deactivate, reactivate and delete', async () => {
    const client = demoClient();
    const { image } = await createUploaded(client);
    await client.deactivate(image.id);
    expect((await client.getImage(image.id))?.status).toBe('deactivated');
    await client.reactivate(image.id);
    expect((await client.getImage(image.id))?.status).toBe('active');
    await client.deactivate(image.id);
    await client.deleteImage(image.id);
    expect(await client.getImage(image.id)).toBeUndefined();
    await client.deleteImage(image.id); // already gone: fine
  });
});

describe('a crash mid-upload', () => {
  test('an aborted upload leaves a record that the retry cleans up: afterwards there is one active image, none queued or saving', async () => {
    const client = demoClient();
    const ev = event();
    const { image: first } = await createFor(client, ev);
    const abort = new AbortController();
    const failed = await client
      .uploadFile(first.id, bigFile, {
        signal: abort.signal,
        onProgress: (done) => done > 8 * 1024 * 1024 && abort.abort(),
      })
      .catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(CloudApiError);
    const left = await client.getImage(first.id);
    expect(['queued', 'saving']).toContain(left?.status);

    // The retry: clean up what the crashed attempt left, then a new record and a full upload.
    expect(await client.deleteIncomplete(identityFilter(ev))).toEqual([first.id]);
    const { image: second } = await createUploaded(client, ev, bigFile);
    const ours = await client.findOurImages(identityFilter(ev));
    expect(ours.map((i) => [i.id, i.status])).toEqual([[second.id, 'active']]);
    expect(await client.getImage(first.id)).toBeUndefined();
  });
});

describe('Keystone', () => {
  test('a password credential works as well, and the Glance endpoint comes from the catalog by interface and region', async () => {
    const session = passwordSession({
      username: cloud.demo.username,
      password: cloud.demo.password,
      projectName: cloud.demo.projectName,
    });
    expect(await session.endpoint('image')).toBe(cloud.glanceUrl);
    expect(await session.projectId()).toBe(cloud.demo.projectId);
    const internal = appCredentialSession(cloud.demo, { iface: 'internal' });
    expect(await internal.endpoint('image')).toBe(cloud.glanceUrl);
    await expect(appCredentialSession(cloud.demo, { region: 'NoSuchRegion' }).endpoint('image')).rejects.toThrow(
      /no 'image' endpoint for interface public, region NoSuchRegion \(it has: .*public@RegionOne/,
    );
  });

  test('a wrong secret is refused by Keystone with an error naming the credential, and the secret is not in it', async () => {
    const bad = new KeystoneSession({
      dispatcher: agent,
      authUrl: cloud.keystoneUrl,
      credential: { type: 'application-credential', id: cloud.demo.appCredentialId, secret: 'not-the-secret-at-all' },
      interface: 'public',
    });
    const err = await bad.token().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloudApiError);
    expect((err as CloudApiError).status).toBe(401);
    expect((err as CloudApiError).permanent).toBe(true);
    expect((err as Error).message).toContain(`refused application credential ${cloud.demo.appCredentialId}`);
    expect((err as Error).message).not.toContain('not-the-secret-at-all');
  });

  test('Glance answers 401 to a bad token; the client renews a revoked token and repeats the call, an upload included', async () => {
    const raw = await request(`${cloud.glanceUrl}/v2/images`, {
      headers: { 'x-auth-token': 'gAAAAA-not-a-token' },
      dispatcher: agent,
    });
    await raw.body.dump();
    expect(raw.statusCode).toBe(401);

    const { image } = await createFor(
      new GlanceClient({ session: appCredentialSession(cloud.demo), dispatcher: agent }),
    );
    // Each session's first token is revoked before Glance has seen it: Glance trusts a token it
    // validated for its token cache time (test/support/openstack.ts), as a production Glance does.
    const revokedFirst = async () => {
      const session = appCredentialSession(cloud.demo);
      await cloud.revokeToken(await session.token());
      expect(session.authentications).toBe(1);
      return { session, client: new GlanceClient({ session, dispatcher: agent }) };
    };
    const reading = await revokedFirst();
    expect((await reading.client.getImage(image.id))?.id).toBe(image.id);
    expect(reading.session.authentications).toBe(2);

    const uploading = await revokedFirst();
    const sent = await uploading.client.uploadFile(image.id, smallFile);
    expect(uploading.session.authentications).toBe(2);
    expect((await uploading.client.verifyUpload(image.id, sent)).status).toBe('active');
  });

  test("a token is renewed before Keystone's expiry time, without waiting for a 401", async () => {
    // Renew 5 s into the token's life (its expiry, from Keystone, less the margin); a session with
    // the default margin (5 minutes of a 1-hour token) keeps its token over the same time.
    const renewing = new KeystoneSession({
      dispatcher: agent,
      authUrl: cloud.keystoneUrl,
      credential: {
        type: 'application-credential',
        id: cloud.demo.appCredentialId,
        secret: cloud.demo.appCredentialSecret,
      },
      interface: 'public',
      renewBeforeMs: (TOKEN_SECONDS - 5) * 1000,
    });
    const keeping = appCredentialSession(cloud.demo);
    const client = new GlanceClient({ session: renewing, dispatcher: agent });
    const { image } = await createFor(client);
    const first = await renewing.token();
    // 1, or 2 when making the image took more than the token's 5 s (a loaded machine): the count
    // from here on is what the test is about.
    const before = renewing.authentications;
    const kept = await keeping.token();
    await new Promise((r) => setTimeout(r, 6000));
    expect((await client.getImage(image.id))?.id).toBe(image.id);
    // Exactly one renewal over the 6 s, before any 401.
    expect(renewing.authentications).toBe(before + 1);
    expect(await renewing.token()).not.toBe(first);
    expect(await keeping.token()).toBe(kept);
    expect(keeping.authentications).toBe(1);
  });
});

describe('registration steps', () => {
  const logger = pino({ level: 'silent' });
  const settings = (over: Partial<GlanceSettings> = {}): GlanceSettings => ({
    visibility: 'shared',
    voProjects: { 'vo.example.org': cloud.other.projectId },
    expireAction: 'deactivate',
    properties: { hw_disk_bus: 'virtio' },
    ...over,
  });

  test('publishing the same revision twice registers one image, shared with its VO project; the second time reuses it', async () => {
    const client = demoClient();
    const ev = event();
    const first = await publishToGlance(
      client,
      settings(),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(first).toMatchObject({
      reused: false,
      visibility: 'shared',
      diskFormat: 'raw',
      location: `${cloud.glanceUrl}/v2/images/${first.imageId}`,
    });
    expect(first.properties.hw_disk_bus).toBe('virtio');
    expect(await client.members(first.imageId)).toEqual([
      expect.objectContaining({ member_id: cloud.other.projectId }),
    ]);
    const second = await publishToGlance(
      client,
      settings(),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(second).toMatchObject({ imageId: first.imageId, reused: true });
    expect((await client.findOurImages(identityFilter(ev))).map((i) => i.id)).toEqual([first.imageId]);
  });

  test('a record a crashed attempt left queued is replaced by one complete image', async () => {
    const client = demoClient();
    const ev = event();
    const { image: leftover } = await createFor(client, ev);
    const published = await publishToGlance(
      client,
      settings({ visibility: 'private' }),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(await client.getImage(leftover.id)).toBeUndefined();
    expect((await client.findOurImages(identityFilter(ev))).map((i) => [i.id, i.status])).toEqual([
      [published.imageId, 'active'],
    ]);
  });

  test('an upload Glance does not confirm is deleted, leaving nothing behind', async () => {
    // Glance hashes with sha512; a client told the site uses sha256 cannot confirm the upload.
    const client = new GlanceClient({
      session: appCredentialSession(cloud.demo),
      dispatcher: agent,
      hashAlgorithm: 'sha256',
    });
    const ev = event();
    const err = await publishToGlance(
      client,
      settings(),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageIntegrityError);
    expect((err as Error).message).toMatch(/Glance hashed with 'sha512', we computed sha256/);
    expect(await client.findOurImages(identityFilter(ev))).toEqual([]);
  });

  test('expiry deactivates and makes private our image only; the revision published again is reactivated', async () => {
    const client = demoClient();
    const other = otherClient();
    const ev = event();
    const ours = await publishToGlance(
      client,
      settings(),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    const theirs = await createUploaded(other, ev);
    await other.setVisibility(theirs.image.id, 'community');

    expect(await expireInGlance(client, settings(), ev, logger)).toEqual({
      action: 'deactivate',
      imageIds: [ours.imageId],
    });
    expect(await client.getImage(ours.imageId)).toMatchObject({ status: 'deactivated', visibility: 'private' });
    expect(await other.getImage(theirs.image.id)).toMatchObject({ status: 'active', visibility: 'community' });

    const again = await findGlanceImage(client, settings(), ev, cloud.glanceUrl, logger);
    expect(again).toMatchObject({ imageId: ours.imageId, reused: true, visibility: 'shared' });
    expect((await client.getImage(ours.imageId))?.status).toBe('active');
  });

  test('expiry with expireAction delete deletes our image', async () => {
    const client = demoClient();
    const ev = event();
    const ours = await publishToGlance(
      client,
      settings({ visibility: 'private' }),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(await expireInGlance(client, settings({ expireAction: 'delete' }), ev, logger)).toEqual({
      action: 'delete',
      imageIds: [ours.imageId],
    });
    expect(await client.getImage(ours.imageId)).toBeUndefined();
  });

  test('an active image a crash left between upload and verify is not reused: it is replaced by a verified one', async () => {
    const client = demoClient();
    const ev = event();
    // Uploaded and active, with our identity, but never marked as verified by us.
    const { image: crashed } = await createUploaded(client, ev);
    expect(crashed.status).toBe('active');
    expect(await findGlanceImage(client, settings(), ev, cloud.glanceUrl, logger)).toBeNull();
    const published = await publishToGlance(
      client,
      settings({ visibility: 'private' }),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(published.reused).toBe(false);
    expect(published.imageId).not.toBe(crashed.id);
    expect(await client.getImage(crashed.id)).toBeUndefined();
    const stored = await client.getImage(published.imageId);
    expect(stored?.[VERIFIED_PROPERTY]).toBe(`sha512:${stored?.os_hash_value}`);
    expect(stored?.os_hash_value).toBe(createHash('sha512').update(readFileSync(smallFile)).digest('hex'));
    // And now it is the one reused.
    expect(await findGlanceImage(client, settings(), ev, cloud.glanceUrl, logger)).toMatchObject({
      imageId: published.imageId,
      reused: true,
    });
  });

  test('a mark that does not match the stored hash is not trusted either', async () => {
    const client = demoClient();
    const ev = event();
    const { image } = await createUploaded(client, ev);
    await client.updateImage(image.id, { set: { [VERIFIED_PROPERTY]: `sha512:${'0'.repeat(128)}` } });
    expect(await findGlanceImage(client, settings(), ev, cloud.glanceUrl, logger)).toBeNull();
  });

  test("a list's inventory names each of our images by the title and version its registration stored, expired or not", async () => {
    const client = demoClient();
    // A list of its own, so that no other test's images are in its inventory.
    const ev = { ...event(), imageListId: `list-inventory-${randomBytes(3).toString('hex')}` };
    const ours = await publishToGlance(
      client,
      settings(),
      { event: ev, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    const listed = {
      cloudImageId: ours.imageId,
      imageId: ev.imageId,
      revision: ours.properties[IDENTITY_PROPERTIES.revision],
      title: 'Ubuntu 22.04 test image',
      version: '22.04-1',
    };
    expect(await inventoryInGlance(client, ev.imageListId)).toEqual([{ ...listed, isPublic: true }]);
    await expireInGlance(client, settings(), ev, logger);
    expect(await inventoryInGlance(client, ev.imageListId)).toEqual([{ ...listed, isPublic: false }]);
  });

  test("a queued event's VO alone never chooses the project a shared image joins; the site's imageListVos does", async () => {
    const client = demoClient();
    // A queued message naming the VO that is mapped to another tenant's project.
    const queued = event(undefined, 'message');
    const notShared = await publishToGlance(
      client,
      settings(),
      { event: queued, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(notShared.visibility).toBe('shared');
    expect(await client.members(notShared.imageId)).toEqual([]);
    // The site maps the image list to the VO: then it is shared, whatever the event says.
    const mapped = { ...event(undefined, 'message'), vo: 'some.other.vo' };
    const shared = await publishToGlance(
      client,
      settings({ imageListVos: { 'list-glance-tests': 'vo.example.org' } }),
      { event: mapped, file: smallFile, diskFormat: 'raw' },
      cloud.glanceUrl,
      logger,
    );
    expect(await client.members(shared.imageId)).toEqual([
      expect.objectContaining({ member_id: cloud.other.projectId }),
    ]);
  });
});
