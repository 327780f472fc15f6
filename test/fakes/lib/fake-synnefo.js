// Shared state and helpers of the fake kamaki and snf-mkimage (plain ESM JavaScript, no build).
// The state is one JSON file named by FAKE_SYNNEFO_STATE; every invocation takes a lock
// (an exclusive lock file) for its whole read-modify-write and replaces the file by atomic rename,
// so concurrent invocations never corrupt it.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import crypto from 'node:crypto';

export function statePath() {
  const file = process.env.FAKE_SYNNEFO_STATE;
  if (!file) {
    process.stderr.write('fake synnefo tool: FAKE_SYNNEFO_STATE is not set\n');
    process.exit(99);
  }
  return file;
}

function emptyState() {
  return { objects: {}, containers: {}, images: [], invocations: [], failuresUsed: {}, nextImage: 1 };
}

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const STALE_LOCK_MS = 10_000;

/** Runs fn(state) under the lock and saves what it leaves in `state`. */
export function withState(fn) {
  const file = statePath();
  const lock = `${file}.lock`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A holder that died (killed by its step's cancellation, say) leaves its lock behind: take
      // it over. Its pid alone cannot tell: pids wrap at 32768 here, and a busy machine hands a
      // dead holder's pid to another process within seconds, so a lock older than any holder
      // keeps it (a read-modify-write of the state takes milliseconds) is stale too.
      try {
        const holder = Number(fs.readFileSync(lock, 'utf8'));
        const age = Date.now() - fs.statSync(lock).mtimeMs;
        if ((holder && !isAlive(holder)) || age > STALE_LOCK_MS) fs.rmSync(lock, { force: true });
      } catch {
        /* raced with the holder's release */
      }
      if (Date.now() > deadline) throw new Error(`fake synnefo tool: timed out waiting for ${lock}`);
      sleepSync(10);
    }
  }
  try {
    const state = { ...emptyState(), ...(fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {}) };
    const result = fn(state);
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(state, null, 2));
    fs.renameSync(tmp, file);
    return result;
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

export function recordInvocation(tool, argv) {
  withState((state) => {
    state.invocations.push({ tool, argv, at: new Date().toISOString() });
  });
}

/**
 * FAKE_SYNNEFO_FAIL: comma-separated `<step>:<mode>` where step is a kamaki command
 * (upload, container, user, list, info, register, modify, unregister) or `mkimage`, and mode is
 *   once   fail before doing anything, the first time only
 *   always fail before doing anything, every time
 *   after  do the work, then fail (a lost reply), the first time only
 *   kill   kill itself with SIGKILL before doing anything, the first time only
 * Returns the mode that applies to this call, or undefined.
 */
export function injectedFailure(step) {
  const spec = (process.env.FAKE_SYNNEFO_FAIL ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of spec) {
    const [name, mode = 'once'] = item.split(':');
    if (name !== step) continue;
    if (mode === 'always') return 'always';
    const used = withState((state) => {
      const key = `${name}:${mode}`;
      const was = Boolean(state.failuresUsed[key]);
      state.failuresUsed[key] = true;
      return was;
    });
    if (!used) return mode;
  }
  return undefined;
}

/** Clouds defined in the kamaki config: FAKE_KAMAKIRC, else $HOME/.kamakirc (or an explicit -c file). */
export function readKamakirc(explicit) {
  const file = explicit ?? process.env.FAKE_KAMAKIRC ?? path.join(process.env.HOME ?? os.homedir(), '.kamakirc');
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return { file, clouds: {}, defaultCloud: undefined };
  }
  const clouds = {};
  let defaultCloud;
  let section;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      const cloud = /^cloud\s+"(.+)"$/.exec(header[1].trim());
      section = cloud ? { cloud: cloud[1] } : { name: header[1].trim() };
      if (cloud) clouds[cloud[1]] = {};
      continue;
    }
    const kv = /^([^=]+?)\s*=\s*(.*)$/.exec(line);
    if (!kv || !section) continue;
    if (section.cloud) clouds[section.cloud][kv[1]] = kv[2];
    else if (section.name === 'global' && kv[1] === 'default_cloud') defaultCloud = kv[2];
  }
  return { file, clouds, defaultCloud };
}

/**
 * The user a token belongs to, as Astakos would say: a stable fake uuid per token, so two
 * clouds with the same token are the same account and locations look like
 * pithos://<uuid>/<container>/<path>.
 */
export function ownerUuid(token) {
  const h = crypto.createHash('sha256').update(`fake-owner:${token}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The user name Astakos would give for that user. */
export function ownerName(token) {
  return `user-${ownerUuid(token).slice(0, 8)}@example.org`;
}

/**
 * Puts an image of another account into the state, as another tenant would have registered it
 * (its object included): `{ owner?, name?, isPublic?, properties }`. Returns the image.
 */
export function seedImage({
  owner = ownerUuid('another-tenant'),
  name = "someone else's image",
  isPublic = true,
  properties = {},
}) {
  return withState((state) => {
    const id = crypto.randomUUID();
    const object = `seeded-${id}`;
    const now = new Date().toISOString().replace('T', ' ').slice(0, 19);
    state.containers[`${owner}/images`] = { created_at: now };
    state.objects[`${owner}/images/${object}`] = {
      container: 'images',
      path: object,
      size: 0,
      sha256: '',
      public: isPublic,
    };
    const img = {
      id,
      name,
      location: `pithos://${owner}/images/${object}`,
      owner,
      owner_name: 'another-tenant@example.org',
      is_public: isPublic,
      status: 'AVAILABLE',
      disk_format: 'diskdump',
      container_format: 'bare',
      size: 0,
      checksum: '',
      created_at: now,
      updated_at: now,
      deleted_at: '',
      properties: Object.fromEntries(Object.entries(properties).map(([k, v]) => [k.toUpperCase(), String(v)])),
    };
    state.images.push(img);
    return img;
  });
}

export function fileDigests(file) {
  const sha256 = crypto.createHash('sha256');
  const md5 = crypto.createHash('md5');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  let size = 0;
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      sha256.update(buf.subarray(0, n));
      md5.update(buf.subarray(0, n));
      size += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { size, sha256: sha256.digest('hex'), md5: md5.digest('hex') };
}
