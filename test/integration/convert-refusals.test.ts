import { copyFile, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { createHostActivities } from '../../activities/host.js';
import { asRunByWorker } from '../support/activities.js';
import { OWNER_FILE, createWorkDir } from '../../activities/workspace.js';
import { runCli } from '../support/cli.js';
import { writeLinuxMbr } from '../support/disk-images.js';
import { makeRawDisk, makeTar, pipelineConfig, quietLogger, tempDir } from '../support/pipeline-fixtures.js';

/**
 * Images made by the real qemu-img that would make qemu-img read files of the
 * worker's host (an external data file, a backing file, VMDK extents, json: names), or need a
 * key (LUKS), are refused before any byte of another file is read; content that is not a disk
 * (an HTML error page, JSON, XML, text) never passes as raw. Real raw disks still pass.
 */
const SECRET = 'kamaki-token-0123456789abcdef';

describe('images that reach outside their own file, or are not disks, are refused with a permanent error', () => {
  let root: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let work: string;
  let secret: string;
  let activities: ReturnType<typeof createHostActivities>;
  const at = (f: string) => path.join(src, f);
  const qemu = (...args: string[]) => execa('qemu-img', args);
  /**
   * Creating a LUKS volume times its key derivation on the thread's CPU clock first; on a busy VM
   * that clock can read no progress ("Unable to get accurate CPU usage", crypto/pbkdf.c) and
   * qemu-img gives up. Fixture set-up only: try again.
   */
  const qemuLuks = async (...args: string[]) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await qemu(...args);
      } catch (err) {
        if (attempt >= 5 || !String((err as Error).message).includes('Unable to get accurate CPU usage')) throw err;
      }
    }
  };

  beforeAll(async () => {
    root = await tempDir('snf-refuse-');
    src = path.join(root.dir, 'src');
    work = path.join(root.dir, 'work');
    await execa('mkdir', ['-p', src, work]);
    activities = asRunByWorker(createHostActivities({ config: pipelineConfig(work), logger: quietLogger }));
    // A host file the worker can read (like the kamaki token or application.conf).
    secret = path.join(root.dir, 'secret.conf');
    await writeFile(secret, `${SECRET}\n`.repeat(64));

    // The attack of a qcow2 whose raw external data file is the host file.
    await execa('truncate', ['-s', '1M', at('scratch')]);
    await qemu(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${at('scratch')},data_file_raw=on,preallocation=metadata`,
      at('datafile.qcow2'),
      '1M',
    );
    await qemu('amend', '-f', 'qcow2', '-o', `data_file=${secret}`, at('datafile.qcow2'));
    // Confirm the fixture is the real attack: plain qemu-img copies the secret into the raw image.
    await qemu('convert', '-f', 'qcow2', '-O', 'raw', at('datafile.qcow2'), at('leak.raw'));
    expect((await readFile(at('leak.raw'), 'latin1')).includes(SECRET)).toBe(true);

    await qemu('create', '-q', '-f', 'qcow2', '-b', secret, '-F', 'raw', at('backing.qcow2'), '1M');
    await qemu(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-u',
      '-b',
      `json:{"driver":"file","filename":"${secret}"}`,
      '-F',
      'raw',
      at('json-backing.qcow2'),
      '1M',
    );
    await qemu('create', '-q', '-f', 'qed', '-b', secret, '-F', 'raw', at('backing.qed'), '1M');
    await makeRawDisk(at('parent.img'), 1);
    await qemu('convert', '-q', '-f', 'raw', '-O', 'vmdk', at('parent.img'), at('parent.vmdk'));
    await qemu('create', '-q', '-f', 'vmdk', '-b', at('parent.vmdk'), '-F', 'vmdk', at('child.vmdk'));
    await qemu('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', at('flat.vmdk'), '1M');
    const descriptor = (await readFile(at('flat.vmdk'), 'utf8')).replace(/"flat-flat\.vmdk"/, `"${secret}"`);
    await writeFile(at('extent.vmdk'), descriptor);
    const key = ['--object', 'secret,id=k,data=passphrase'];
    await qemuLuks(
      'create',
      '-q',
      '-f',
      'qcow2',
      ...key,
      '-o',
      'encrypt.format=luks,encrypt.key-secret=k',
      at('luks.qcow2'),
      '1M',
    );
    await qemuLuks('create', '-q', '-f', 'luks', ...key, '-o', 'key-secret=k', at('volume.luks'), '1M');
    await makeTar(at('datafile.tar.gz'), src, ['datafile.qcow2'], { gzip: true });

    // Not disks.
    await writeFile(
      at('expired.img'),
      '<!DOCTYPE html>\n<html><head><title>Token expired</title></head><body>Please log in again</body></html>\n',
    );
    await writeFile(at('error.img'), JSON.stringify({ error: 'invalid_token', status: 401 }));
    await writeFile(at('soap.img'), '<?xml version="1.0"?>\n<Error><Code>AccessDenied</Code></Error>\n');
    await writeFile(at('notes.img'), 'This image has moved, see the new list.\n'.repeat(100));
    await makeRawDisk(at('odd.img'), 1);
    await execa('truncate', ['-s', '1048577', at('odd.img')]);
    await execa('truncate', ['-s', '1M', at('zeros.img')]);

    // Real raw disks.
    await execa('truncate', ['-s', '8M', at('mbr.img')]);
    await writeLinuxMbr(at('mbr.img'), 8 * 1024 * 1024);
    await execa('truncate', ['-s', '8M', at('ext4.img')]);
    await execa('mkfs.ext4', ['-q', '-F', at('ext4.img')]);
    await execa('truncate', ['-s', '8M', at('gpt.img')]);
    const gpt = Buffer.alloc(1024);
    gpt.write('EFI PART', 512, 'latin1');
    await writeFile(at('gpt-header.bin'), gpt);
    await execa('dd', [`if=${at('gpt-header.bin')}`, `of=${at('gpt.img')}`, 'conv=notrunc', 'status=none']);
  });

  afterAll(async () => {
    await root?.cleanup();
  });

  /** Runs inspect and convert on a copy of `file` in a fresh work folder; returns that folder. */
  async function copyIn(file: string, name: string): Promise<{ workflowId: string; workDir: string; input: string }> {
    const workflowId = `refuse ${name} ${Math.random()}`;
    const workDir = await createWorkDir(pipelineConfig(work), workflowId);
    const input = path.join(workDir, file);
    await copyFile(at(file), input);
    return { workflowId, workDir, input };
  }

  async function expectNoLeak(workDir: string, input: string): Promise<void> {
    const left = (await readdir(workDir)).filter((f) => f !== OWNER_FILE);
    expect(left).toEqual([path.basename(input)]);
  }

  test.each([
    [
      'a qcow2 whose external data file is a host file',
      'datafile.qcow2',
      'qcow2',
      /datafile\.qcow2 refused: its data lives in an external data file/,
    ],
    ['a qcow2 with a backing file', 'backing.qcow2', 'qcow2', /refers to a backing file \(.*secret\.conf\)/],
    ['a qcow2 whose backing file is a json: name', 'json-backing.qcow2', 'qcow2', /refers to a backing file \(json:\{/],
    ['a QED with a backing file', 'backing.qed', 'qed', /backing\.qed refused: it refers to a backing file/],
    [
      'a VMDK with a parent disk (parentFileNameHint)',
      'child.vmdk',
      'vmdk',
      /child\.vmdk refused: it refers to a parent disk/,
    ],
    [
      'a VMDK descriptor whose extent is a host file',
      'extent.vmdk',
      'vmdk',
      /extent\.vmdk refused: it is a VMDK descriptor whose data lives in other files/,
    ],
    ['a LUKS-encrypted qcow2', 'luks.qcow2', 'qcow2', /luks\.qcow2 refused: it is encrypted \(LUKS\)/],
    ['a bare LUKS volume', 'volume.luks', 'luks', /volume\.luks refused: format 'luks' is not accepted/],
  ])('%s: inspect and convert both refuse it, and nothing is written', async (_name, file, format, expected) => {
    const { workflowId, workDir, input } = await copyIn(file, file);
    await expect(activities.inspectImage({ path: input, fileName: file })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(expected),
    });
    // Convert refuses on its own, even when told the format without inspecting.
    await expect(activities.convertToRaw({ workflowId, path: input, workDir, format })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(/refused|not accepted/),
    });
    await expectNoLeak(workDir, input);
  });

  test('the data-file qcow2 hidden in a tar.gz is refused after unpacking, and its partial files are gone', async () => {
    const { workflowId, workDir, input } = await copyIn('datafile.tar.gz', 'tar');
    const info = await activities.inspectImage({ path: input });
    expect(info.format).toBe('gz');
    await expect(
      activities.convertToRaw({ workflowId, path: input, workDir, format: info.format }),
    ).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(/datafile\.qcow2 refused: its data lives in an external data file/),
    });
    await expectNoLeak(workDir, input);
  });

  test.each([
    [
      'an HTML error page',
      'expired.img',
      /expired\.img is not a disk image: it looks like an HTML page \(title 'Token expired'\)/,
    ],
    ['a JSON body', 'error.img', /error\.img is not a disk image: it looks like a JSON document/],
    [
      'an XML body',
      'soap.img',
      /soap\.img is not a disk image: it looks like an XML document \(root element <Error>\)/,
    ],
    [
      'a text file',
      'notes.img',
      /notes\.img is not a disk image: it looks like a text file \(first line 'This image has moved/,
    ],
    [
      'a size that is not a multiple of 512',
      'odd.img',
      /odd\.img is not a disk image: its size \(1048577 bytes\) is not a multiple of 512/,
    ],
    ['all zero bytes', 'zeros.img', /zeros\.img is not a disk image: its first \d+ bytes are all zero/],
  ])('%s is refused as not a disk image, naming what it looks like', async (_name, file, expected) => {
    const { workflowId, workDir, input } = await copyIn(file, file);
    await expect(activities.inspectImage({ path: input, fileName: file, formatHint: 'raw' })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(expected),
    });
    await expect(activities.convertToRaw({ workflowId, path: input, workDir, format: 'raw' })).rejects.toMatchObject({
      nonRetryable: true,
      message: expect.stringMatching(expected),
    });
    await expectNoLeak(workDir, input);
  });

  test.each([
    ['an MBR-partitioned disk', 'mbr.img'],
    ['a GPT disk', 'gpt.img'],
    ['a bare ext4 filesystem', 'ext4.img'],
  ])('%s passes as raw', async (_name, file) => {
    const { workflowId, workDir, input } = await copyIn(file, file);
    const info = await activities.inspectImage({ path: input, fileName: file });
    expect(info).toMatchObject({ format: 'raw', virtualSize: 8 * 1024 * 1024 });
    const raw = await activities.convertToRaw({ workflowId, path: input, workDir, format: info.format });
    expect(raw.bytes).toBe(8 * 1024 * 1024);
  });

  test('transform refuses the data-file qcow2 and the HTML page: exit 1, one clear line, no temporary files, no secret in any output', async () => {
    for (const [file, expected] of [
      ['datafile.qcow2', /^snf-vmcatcher: datafile\.qcow2 refused: its data lives in an external data file/],
      ['expired.img', /^snf-vmcatcher: expired\.img is not a disk image: it looks like an HTML page/],
    ] as const) {
      const before = await readdir(work);
      const result = await runCli(['transform', '--url', `file://${at(file)}`, '--working-folder', work]);
      expect(result.exitCode).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr.split('\n').filter((l) => l.startsWith('snf-vmcatcher:'))).toEqual([
        expect.stringMatching(expected),
      ]);
      expect(result.stderr).not.toContain(SECRET);
      expect(await readdir(work)).toEqual(before);
    }
  });
});
