import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isInsideFolder, realPathInFolders } from '../../core/paths.js';
import { tempDir } from '../support/pipeline-fixtures.js';

describe('folder confinement (file: URLs, the vmcatcher cache, file: image lists)', () => {
  test.each([
    ['a file in the folder', '/srv/lists/a.json', true],
    ['the folder itself', '/srv/lists', true],
    ['a file in a subfolder', '/srv/lists/vo/a.json', true],
    ['a name that starts with two dots', '/srv/lists/..a.json', true],
    ['a folder whose name extends the allowed one', '/srv/lists-evil/a.json', false],
    ['the parent', '/srv', false],
    ['a path that climbs out', '/srv/lists/../secret', false],
    ['elsewhere', '/etc/passwd', false],
  ])('%s: %s', (_what, file, inside) => {
    expect(isInsideFolder(file, '/srv/lists')).toBe(inside);
  });

  describe('on disk', () => {
    let root: Awaited<ReturnType<typeof tempDir>>;
    let allowed: string;
    let outside: string;

    beforeAll(async () => {
      root = await tempDir('snf-paths-');
      allowed = path.join(root.dir, 'allowed');
      outside = path.join(root.dir, 'outside');
      await mkdir(allowed);
      await mkdir(outside);
      await writeFile(path.join(allowed, 'in.img'), 'x');
      await writeFile(path.join(outside, 'secret'), 'x');
      await symlink(path.join(outside, 'secret'), path.join(allowed, 'link-out'));
      await symlink(allowed, path.join(root.dir, 'allowed-link'));
    });

    afterAll(async () => {
      await root.cleanup();
    });

    test('a file inside is inside, with its real path', async () => {
      await expect(realPathInFolders(path.join(allowed, 'in.img'), [allowed], 'test file')).resolves.toEqual({
        real: path.join(allowed, 'in.img'),
        inside: true,
      });
    });

    test('a symlink inside that points out is outside', async () => {
      await expect(realPathInFolders(path.join(allowed, 'link-out'), [allowed], 'test file')).resolves.toEqual({
        real: path.join(outside, 'secret'),
        inside: false,
      });
    });

    test('an allowed folder named through a symlink allows what is really in it', async () => {
      const found = await realPathInFolders(
        path.join(allowed, 'in.img'),
        [path.join(root.dir, 'allowed-link')],
        'test file',
      );
      expect(found.inside).toBe(true);
    });

    test("a path with '..' is refused even when it would land inside", async () => {
      await expect(realPathInFolders(`${allowed}/../allowed/in.img`, [allowed], 'test file')).rejects.toThrow(
        /test file .* must be an absolute path without '\.\.'/,
      );
      await expect(realPathInFolders(`${allowed}/../outside/secret`, [allowed], 'test file')).rejects.toThrow(
        /must be an absolute path without/,
      );
    });

    test('a relative path is refused', async () => {
      await expect(realPathInFolders('allowed/in.img', [allowed], 'test file')).rejects.toThrow(
        /must be an absolute path/,
      );
    });

    test('an allowed folder that does not exist holds nothing; a missing file is realpath’s error', async () => {
      await expect(
        realPathInFolders(path.join(outside, 'secret'), [path.join(root.dir, 'gone')], 'test file'),
      ).resolves.toMatchObject({ inside: false });
      await expect(realPathInFolders(path.join(allowed, 'missing'), [allowed], 'test file')).rejects.toMatchObject({
        code: 'ENOENT',
      });
    });
  });
});
