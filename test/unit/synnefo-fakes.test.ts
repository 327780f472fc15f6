import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The fakes must refuse what the real kamaki and snf-mkimage refuse, or the activities could
 * pass tests with command lines that fail in production.
 */
const root = path.resolve(import.meta.dirname, '../..');
const KAMAKI = path.join(root, 'test/fakes/kamaki');
const SNF_MKIMAGE = path.join(root, 'test/fakes/snf-mkimage');

let dir: string;
let env: NodeJS.ProcessEnv;

function run(tool: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(tool, args, { env: { ...env, ...extraEnv }, encoding: 'utf8', cwd: dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function mbrImage(file: string, partitionType = 0x83): string {
  const b = Buffer.alloc(64 * 1024);
  b[446 + 4] = partitionType;
  b[510] = 0x55;
  b[511] = 0xaa;
  writeFileSync(file, b);
  return file;
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'synnefo-fakes-'));
  writeFileSync(
    path.join(dir, 'kamakirc'),
    '[global]\ndefault_cloud = test\n\n[cloud "test"]\nurl = https://accounts.example.org/identity/v2.0\ntoken = secret-token\n',
  );
  env = { ...process.env, FAKE_SYNNEFO_STATE: path.join(dir, 'state.json'), FAKE_KAMAKIRC: path.join(dir, 'kamakirc') };
  delete env.FAKE_SYNNEFO_FAIL;
  mbrImage(path.join(dir, 'disk.raw'));
  writeFileSync(path.join(dir, 'noimage.raw'), Buffer.alloc(4096));
  expect(run(KAMAKI, ['container', 'create', 'images', '--cloud', 'test']).code).toBe(0);
  expect(run(KAMAKI, ['file', 'upload', path.join(dir, 'disk.raw'), '/images/disk', '--cloud', 'test']).code).toBe(0);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('fake kamaki rejects what the real one (0.17) rejects, the way it does', () => {
  test.each<[string, string[]]>([
    ['image register without --name', ['image', 'register', '--location', '/images/disk', '--cloud', 'test']],
    ['image register without --location', ['image', 'register', '--name', 'x', '--cloud', 'test']],
    [
      'a property key outside [A-Za-z0-9_]',
      ['image', 'register', '--name', 'x', '--location', '/images/disk', '-p', 'BAD.KEY=1', '--cloud', 'test'],
    ],
    [
      'a property that is not KEY=VALUE',
      ['image', 'register', '--name', 'x', '--location', '/images/disk', '-p', 'NOVALUE', '--cloud', 'test'],
    ],
    [
      'more than 32 properties',
      [
        'image',
        'register',
        '--name',
        'x',
        '--location',
        '/images/disk',
        ...Array.from({ length: 33 }, (_, i) => ['-p', `K${i}=v`]).flat(),
        '--cloud',
        'test',
      ],
    ],
    [
      'a location whose object was never uploaded',
      ['image', 'register', '--name', 'x', '--location', '/images/never-uploaded', '--cloud', 'test'],
    ],
    ['a location without an object', ['image', 'register', '--name', 'x', '--location', '/images', '--cloud', 'test']],
    ['upload of a missing local file', ['file', 'upload', '/nonexistent/file.raw', '/images/x', '--cloud', 'test']],
    ['upload over an existing object without -f', ['file', 'upload', 'disk.raw', '/images/disk', '--cloud', 'test']],
    ['a cloud not in .kamakirc', ['image', 'list', '--cloud', 'elsewhere']],
    ['image modify without any change', ['image', 'modify', 'some-id', '--cloud', 'test']],
    ['image unregister of an unknown image', ['image', 'unregister', 'no-such-image', '--cloud', 'test']],
    [
      '--output-format with a value kamaki does not know',
      ['image', 'list', '--output-format', 'yaml', '--cloud', 'test'],
    ],
    ['an option without its value', ['image', 'list', '--output-format']],
  ])('%s: a message on stderr, exit status 1 (never 2)', (_name, args) => {
    const r = run(KAMAKI, args);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).not.toBe('');
  });

  test.each<[string, string[]]>([
    ['an unknown option', ['image', 'list', '--details', '--bogus', '--output-format', 'json', '--cloud', 'test']],
    ['-s, a global option kamaki dropped before 0.13', ['image', 'list', '-s', '--cloud', 'test']],
    [
      'file upload --with-pool-size, an option of kamaki 0.10',
      ['file', 'upload', 'disk.raw', '/images/disk', '--with-pool-size', '4', '--cloud', 'test'],
    ],
    ['image unregister without an id', ['image', 'unregister', '--cloud', 'test']],
  ])('%s: "Syntax error" and the usage on stdout, exit status 0', (_name, args) => {
    const before = JSON.parse(readFileSync(env.FAKE_SYNNEFO_STATE!, 'utf8'));
    const r = run(KAMAKI, args);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Syntax error\nusage: kamaki /);
    const after = JSON.parse(readFileSync(env.FAKE_SYNNEFO_STATE!, 'utf8'));
    expect(after.images).toEqual(before.images);
    expect(after.objects).toEqual(before.objects);
  });

  test("an unknown command prints its group's usage and exits 0", () => {
    const r = run(KAMAKI, ['image', 'frobnicate', '--cloud', 'test']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: kamaki image /);
  });

  test('the cloud comes from HOME/.kamakirc when FAKE_KAMAKIRC is not set', () => {
    const home = path.join(dir, 'home');
    rmSync(home, { recursive: true, force: true });
    mkdirSync(home, { recursive: true });
    writeFileSync(path.join(home, '.kamakirc'), '[cloud "homecloud"]\nurl = https://x\ntoken = t\n');
    expect(run(KAMAKI, ['image', 'list', '--cloud', 'homecloud'], { FAKE_KAMAKIRC: undefined, HOME: home }).code).toBe(
      0,
    );
    expect(run(KAMAKI, ['image', 'list', '--cloud', 'test'], { FAKE_KAMAKIRC: undefined, HOME: home }).code).not.toBe(
      0,
    );
  });

  test('every invocation is recorded with its argv', () => {
    run(KAMAKI, ['image', 'list', '--cloud', 'test', '--output-format', 'json']);
    const state = JSON.parse(readFileSync(env.FAKE_SYNNEFO_STATE!, 'utf8'));
    expect(state.invocations.at(-1)).toMatchObject({
      tool: 'kamaki',
      argv: ['image', 'list', '--cloud', 'test', '--output-format', 'json'],
    });
  });
});

describe('fake kamaki behaves as kamaki 0.17 against Pithos+ and Plankton', () => {
  test('file upload does not create the container: exit 1, Container "…" does not exist; container create does, once', () => {
    const missing = run(KAMAKI, [
      'file',
      'upload',
      'disk.raw',
      '/fresh/disk',
      '-f',
      '--no-progress-bar',
      '--cloud',
      'test',
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^Container "fresh" does not exist\n/);
    expect(run(KAMAKI, ['container', 'create', 'fresh', '--cloud', 'test'])).toMatchObject({ code: 0, stdout: '' });
    const again = run(KAMAKI, ['container', 'create', 'fresh', '--cloud', 'test']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^Container fresh alread exists\n/);
    const upload = run(KAMAKI, [
      'file',
      'upload',
      'disk.raw',
      '/fresh/disk',
      '-f',
      '--no-progress-bar',
      '--cloud',
      'test',
    ]);
    expect(upload).toMatchObject({ code: 0, stdout: '' });
    expect(upload.stderr).toBe(`${path.join(dir, 'disk.raw')} --> /fresh/disk\nUpload completed\n`);
  });

  test("user info tells the account; image list and info show each image's owner uuid; register prints two JSON documents", () => {
    const user = run(KAMAKI, ['user', 'info', '--output-format', 'json', '--cloud', 'test']);
    expect(user.code).toBe(0);
    const me = JSON.parse(user.stdout) as { id: string; name: string };
    expect(me.id).toMatch(/^[0-9a-f-]{36}$/);

    const reg = run(KAMAKI, [
      'image',
      'register',
      '--name',
      'mine',
      '--location',
      '/images/disk',
      '-p',
      'Some-Key=Value',
      '-f',
      '--output-format',
      'json',
      '--cloud',
      'test',
    ]);
    expect(reg.code).toBe(0);
    const [image, meta] = reg.stdout.split(/\n(?=\{)/).map((doc) => JSON.parse(doc));
    expect(image).toMatchObject({
      owner: `${me.id} (${me.name})`,
      location: `pithos://${me.id}/images/disk`,
      'is-public': 'False',
      properties: { some_key: 'Value' },
    });
    expect(meta).toEqual({ metafile_location: '/images/disk.meta', headers: expect.any(Object) });

    const theirs = spawnSync(
      'node',
      [path.join(root, 'test/fakes/lib/seed-image.js'), JSON.stringify({ properties: { SOME_KEY: 'Value' } })],
      { env, encoding: 'utf8' },
    );
    const foreign = JSON.parse(theirs.stdout) as { id: string; owner: string };
    const list = JSON.parse(
      run(KAMAKI, ['image', 'list', '--details', '--output-format', 'json', '--cloud', 'test']).stdout,
    ) as Array<{ id: string; owner: string }>;
    expect(list.find((i) => i.id === image.id)?.owner).toBe(me.id);
    expect(list.find((i) => i.id === foreign.id)?.owner).toBe(foreign.owner);
    expect(foreign.owner).not.toBe(me.id);
    const info = JSON.parse(
      run(KAMAKI, ['image', 'info', foreign.id, '--output-format', 'json', '--cloud', 'test']).stdout,
    );
    expect(info).toMatchObject({ id: foreign.id, owner: foreign.owner, is_public: true });
    // Someone else's image is not ours to change.
    const modify = run(KAMAKI, ['image', 'modify', foreign.id, '--private', '--cloud', 'test']);
    expect(modify.code).toBe(1);
    expect(modify.stderr).toContain('Forbidden');
  });

  test("the account is the token's user: another cloud with the same token is the same account", () => {
    writeFileSync(
      path.join(dir, 'kamakirc2'),
      '[cloud "a"]\nurl = https://x\ntoken = secret-token\n[cloud "b"]\nurl = https://y\ntoken = other-token\n',
    );
    const id = (cloud: string, rc: string) =>
      JSON.parse(
        run(KAMAKI, ['user', 'info', '--output-format', 'json', '--cloud', cloud], { FAKE_KAMAKIRC: rc }).stdout,
      ).id;
    expect(id('a', path.join(dir, 'kamakirc2'))).toBe(id('test', env.FAKE_KAMAKIRC!));
    expect(id('b', path.join(dir, 'kamakirc2'))).not.toBe(id('test', env.FAKE_KAMAKIRC!));
  });
});

describe('the fakes share one state file safely', () => {
  test('a lock left by a dead holder whose pid another process now has is taken over once it is stale', () => {
    const lock = `${env.FAKE_SYNNEFO_STATE}.lock`;
    // The pid of a live process (this test's), as a reused pid would be; written 11 s ago.
    writeFileSync(lock, String(process.pid));
    const old = new Date(Date.now() - 11_000);
    utimesSync(lock, old, old);
    const started = Date.now();
    const r = run(KAMAKI, ['user', 'info', '--cloud', 'test', '--output-format', 'json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveProperty('id');
    // Taken over at once, not after the 30 s a live holder is waited for.
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(existsSync(lock)).toBe(false);
  });
});

describe('fake snf-mkimage rejects what the real one rejects', () => {
  test.each<[string, string[], number]>([
    ['none of -o, -u, --print-*', ['disk.raw'], 2],
    ['no input media', ['-o', 'out.diskdump'], 2],
    ['an input media that does not exist', ['-o', 'out.diskdump', 'missing.raw'], 2],
    ['an unknown option', ['-o', 'out.diskdump', '--allow-non-root', 'disk.raw'], 2],
    ['-o into a folder that does not exist', ['-o', '/nonexistent/dir/out.diskdump', 'disk.raw'], 2],
    ['a metadata key outside [A-Za-z0-9_]', ['-o', 'out2.diskdump', '-m', 'KEY.1=v', 'disk.raw'], 2],
    ['a metadata value that is not KEY=VALUE', ['-o', 'out2.diskdump', '-m', 'KEY', 'disk.raw'], 2],
    ['-r without -u', ['-o', 'out2.diskdump', '-r', 'name', 'disk.raw'], 2],
    ['-u without a cloud or URL and token', ['-u', 'name', 'disk.raw'], 2],
    ['media that is not a supported disk (no partition table)', ['-o', 'out3.diskdump', 'noimage.raw'], 1],
  ])('%s', (_name, args, code) => {
    const r = run(SNF_MKIMAGE, args);
    expect(r.code).toBe(code);
    expect(r.stderr).toMatch(/error/i);
  });

  test('existing outputs are refused without --force and overwritten with it', () => {
    expect(run(SNF_MKIMAGE, ['-o', 'again.diskdump', 'disk.raw']).code).toBe(0);
    const second = run(SNF_MKIMAGE, ['-o', 'again.diskdump', 'disk.raw']);
    expect(second.code).toBe(2);
    expect(second.stderr).toContain('use --force to overwrite it');
    expect(run(SNF_MKIMAGE, ['-o', 'again.diskdump', '--force', 'disk.raw']).code).toBe(0);
  });

  test('writes the image, .meta in the real format, .md5sum and .variant', () => {
    expect(run(SNF_MKIMAGE, ['-o', 'prepared.diskdump', '-m', 'EXTRA=1', 'disk.raw']).code).toBe(0);
    const meta = JSON.parse(readFileSync(path.join(dir, 'prepared.diskdump.meta'), 'utf8'));
    expect(meta).toEqual({
      properties: expect.objectContaining({
        OSFAMILY: 'linux',
        ROOT_PARTITION: '1',
        PARTITION_TABLE: 'msdos',
        EXTRA: '1',
      }),
      'disk-format': 'diskdump',
    });
    expect(readFileSync(path.join(dir, 'prepared.diskdump.md5sum'), 'utf8')).toMatch(
      /^[0-9a-f]{32} prepared\.diskdump\n$/,
    );
    expect(readFileSync(path.join(dir, 'prepared.diskdump')).equals(readFileSync(path.join(dir, 'disk.raw')))).toBe(
      true,
    );
    expect(readFileSync(path.join(dir, 'prepared.diskdump.variant'), 'utf8').trim()).not.toBe('');
  });

  test('--allow-unsupported proceeds on unsupported media and sets EXCLUDE_ALL_TASKS', () => {
    expect(run(SNF_MKIMAGE, ['-o', 'unsup.diskdump', '--allow-unsupported', 'noimage.raw']).code).toBe(0);
    const meta = JSON.parse(readFileSync(path.join(dir, 'unsup.diskdump.meta'), 'utf8'));
    expect(meta.properties.EXCLUDE_ALL_TASKS).toBe('yes');
  });
});
