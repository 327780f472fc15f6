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

/**
 * A process's identity that outlives pid reuse: its pid and its start time (field 22 of
 * /proc/<pid>/stat, in clock ticks since boot), or undefined when no such process runs.
 */
function processIdentity(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return `${pid} ${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]}`;
  } catch {
    return undefined;
  }
}

/**
 * Removes the lock file `lock` if it is still the one whose inode is `ino`, and only that one: it
 * is renamed aside (atomic) and the renamed file's inode checked; a lock that another process
 * created in between is put back.
 */
function removeIfSame(lock, ino) {
  if (fs.statSync(lock).ino !== ino) return;
  const aside = `${lock}.${process.pid}.stale`;
  fs.renameSync(lock, aside);
  if (fs.statSync(aside).ino !== ino) {
    try {
      fs.linkSync(aside, lock);
    } catch {
      /* a third process holds the lock now; the one set aside was taken over as well */
    }
  }
  fs.rmSync(aside, { force: true });
}

/** Runs fn(state) under the lock and saves what it leaves in `state`. */
export function withState(fn) {
  const file = statePath();
  const lock = `${file}.lock`;
  const me = processIdentity(process.pid);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      fs.writeFileSync(lock, me, { flag: 'wx' });
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A holder that died (killed by its step's cancellation, say) leaves its lock behind: take
      // it over. The lock names its holder by pid and start time, so a pid that a busy machine
      // handed to another process does not keep a dead holder's lock; and a holder that released
      // its lock and exited while we looked is told apart by the lock file's inode, so a lock
      // another process took in the meantime is never removed. A live holder is waited for,
      // however slow the machine: its lock is never taken for its age.
      try {
        const fd = fs.openSync(lock, 'r');
        let holder;
        let ino;
        let mtimeMs;
        try {
          ({ ino, mtimeMs } = fs.fstatSync(fd));
          holder = fs.readFileSync(fd, 'utf8');
        } finally {
          fs.closeSync(fd);
        }
        const pid = Number(holder.split(' ')[0]);
        // An empty file is a holder between its create and its write (microseconds apart), unless
        // it was killed right there: empty for seconds.
        const dead = pid ? processIdentity(pid) !== holder : Date.now() - mtimeMs > 5_000;
        if (dead) removeIfSame(lock, ino);
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

/**
 * The size of `file` and the digests asked for, in one read. `kamaki file upload` hashes what it
 * sends with sha256 only (Pithos' hashmap: one sha256 per block); snf-mkimage's md5sum file is an
 * md5. Each caller asks for what its real tool computes, so the fake costs what the tool would.
 */
export function fileDigests(file, algorithms) {
  const hashes = Object.fromEntries(algorithms.map((a) => [a, crypto.createHash(a)]));
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  let size = 0;
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      for (const h of Object.values(hashes)) h.update(buf.subarray(0, n));
      size += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { size, ...Object.fromEntries(Object.entries(hashes).map(([a, h]) => [a, h.digest('hex')])) };
}
