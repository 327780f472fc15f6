import { translateLegacyArgv } from '../../cli/legacy-argv.js';

describe('translateLegacyArgv: the original single-dash command line keeps working', () => {
  const cases: Array<[string, string[], string[]]> = [
    [
      'the vmcatcher hook line with a global -v before the command',
      ['-v', 'enqueue-from-env', '-conf', '/etc/snf-vmcatcher/application.conf'],
      ['enqueue-from-env', '--conf', '/etc/snf-vmcatcher/application.conf', '--verbose'],
    ],
    [
      'the global -working-folder with its value moves after the command',
      ['-working-folder', '/mnt/tmp', 'transform', '-url', 'http://x/i.qcow2'],
      ['transform', '--url', 'http://x/i.qcow2', '--working-folder', '/mnt/tmp'],
    ],
    [
      'both spellings of -insecure-ssl',
      ['register-now', '-insecure-SSL', '-insecure-ssl'],
      ['register-now', '--insecure-ssl', '--insecure-ssl'],
    ],
    [
      "the new commands' option values are never taken for old options (a value may start with a dash)",
      ['registrations', 'retry', '-conf', 'c', '--image-list-identifier', '-url', '--cloud', '-format'],
      ['registrations', 'retry', '--conf', 'c', '--image-list-identifier', '-url', '--cloud', '-format'],
    ],
    [
      '-sleepMillis becomes --sleep-millis',
      ['dequeue', '-server', '-sleepMillis', '500'],
      ['dequeue', '--server', '--sleep-millis', '500'],
    ],
    [
      'every register-now option',
      ['register-now', '-url', 'u', '-kamaki-cloud', 'c', '-osfamily', 'linux', '-users', 'root', '-format', 'qcow2'],
      [
        'register-now',
        '--url',
        'u',
        '--kamaki-cloud',
        'c',
        '--osfamily',
        'linux',
        '--users',
        'root',
        '--format',
        'qcow2',
      ],
    ],
    [
      'image list options',
      [
        'enqueue-from-image-list',
        '-conf',
        'a.conf',
        '-image-list-url',
        'file:x',
        '-token',
        't',
        '-image-identifier',
        'id',
      ],
      [
        'enqueue-from-image-list',
        '--conf',
        'a.conf',
        '--image-list-url',
        'file:x',
        '--token',
        't',
        '--image-identifier',
        'id',
      ],
    ],
    [
      'the token options in single-dash spelling',
      ['parse-image-list', '-image-list-url', 'file:x', '-token-file', '-conf', '-credential', 'appdb'],
      ['parse-image-list', '--image-list-url', 'file:x', '--token-file', '-conf', '--credential', 'appdb'],
    ],
    ['-handler', ['dequeue', '-handler', 'JustLogHandler'], ['dequeue', '--handler', 'JustLogHandler']],
    ['an option=value pair', ['show-conf', '-conf=app.conf'], ['show-conf', '--conf=app.conf']],
    [
      'the new double-dash spelling passes through',
      ['show-conf', '--conf', 'a.conf', '--json'],
      ['show-conf', '--conf', 'a.conf', '--json'],
    ],
    [
      'a value that looks like a legacy option is not translated',
      ['enqueue-from-image-list', '-token', '-conf', '-conf', 'a'],
      ['enqueue-from-image-list', '--token', '-conf', '--conf', 'a'],
    ],
    ["-h before a command asks for that command's help", ['-h', 'show-conf'], ['show-conf', '--help']],
    ['-help alone prints the usage', ['-help'], ['usage']],
    [
      'an unknown single-dash option is left for the parser to reject',
      ['show-conf', '-bogus'],
      ['show-conf', '-bogus'],
    ],
  ];

  test.each(cases)('%s', (_name, input, expected) => {
    expect(translateLegacyArgv(input).argv).toEqual(expected);
  });

  test('no command at all is reported, as the original printed usage and exited 1', () => {
    expect(translateLegacyArgv([]).noCommand).toBe(true);
    expect(translateLegacyArgv(['-v']).noCommand).toBe(true);
    expect(translateLegacyArgv(['show-env']).noCommand).toBe(false);
  });
});
