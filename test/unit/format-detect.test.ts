import { qemuProgressPercent } from '../../activities/convert.js';
import {
  describeNonDisk,
  detectFormat,
  fileExtension,
  firstTarEntryName,
  formatProblem,
  infoProblem,
  normaliseFormat,
  qcow2HeaderProblem,
  qemuImageSpec,
  rawDiskProblem,
  vmdkDescriptorProblem,
  type QemuImgInfo,
} from '../../activities/inspect.js';

/** A header of `size` zero bytes with `bytes` written at `offset`. */
function header(parts: Array<[number, string | number[] | Buffer]>, size = 68 * 1024): Buffer {
  const buf = Buffer.alloc(size);
  for (const [offset, bytes] of parts) {
    if (typeof bytes === 'string') buf.write(bytes, offset, 'latin1');
    else Buffer.from(bytes as number[]).copy(buf, offset);
  }
  return buf;
}

function tarHeader(name: string): Buffer {
  const buf = Buffer.alloc(1024);
  buf.write(name, 0, 'utf8');
  buf.write('0000644\0', 100);
  buf.write('00000000012\0', 124);
  buf.write('0', 156);
  buf.write('ustar\x0000', 257, 'latin1');
  return buf;
}

const MBR = header([[510, [0x55, 0xaa]]]);
const GPT = header([
  [510, [0x55, 0xaa]],
  [512, 'EFI PART'],
]);
const ZEROS = header([]);
const footer = (() => {
  const t = Buffer.alloc(512);
  t.write('conectix', 0, 'latin1');
  return t;
})();

describe('detectFormat reads the format from content, and falls back to the hint and the extension only when content cannot tell', () => {
  const cases: Array<
    [string, Buffer, Parameters<typeof detectFormat>[1], { format: string; detectedBy: string; details?: RegExp }]
  > = [
    ['qcow2 magic', header([[0, 'QFI\xfb']]), {}, { format: 'qcow2', detectedBy: 'content' }],
    ['vmdk sparse extent', header([[0, 'KDMV']]), {}, { format: 'vmdk', detectedBy: 'content' }],
    [
      'vmdk descriptor-only file',
      header([[0, '# Disk DescriptorFile\nversion=1\n']]),
      {},
      { format: 'vmdk', detectedBy: 'content', details: /descriptor/ },
    ],
    [
      'VDI signature at 0x40',
      header([
        [0, '<<< Oracle VM VirtualBox Disk Image >>>\n'],
        [0x40, [0x7f, 0x10, 0xda, 0xbe]],
      ]),
      {},
      { format: 'vdi', detectedBy: 'content' },
    ],
    ['dynamic VHD (conectix at 0)', header([[0, 'conectix']]), {}, { format: 'vpc', detectedBy: 'content' }],
    [
      'fixed VHD (conectix footer in the last 512 bytes)',
      MBR,
      { tail: footer },
      { format: 'vpc', detectedBy: 'content', details: /fixed/ },
    ],
    ['vhdx', header([[0, 'vhdxfile']]), {}, { format: 'vhdx', detectedBy: 'content' }],
    ['qed', header([[0, 'QED\0']]), {}, { format: 'qed', detectedBy: 'content' }],
    ['ISO 9660 (CD001 at 0x8001)', header([[0x8001, 'CD001']]), {}, { format: 'iso', detectedBy: 'content' }],
    ['gzip', header([[0, [0x1f, 0x8b, 0x08]]]), { fileName: 'image.qcow2' }, { format: 'gz', detectedBy: 'content' }],
    ['bzip2', header([[0, 'BZh9']]), {}, { format: 'bz2', detectedBy: 'content' }],
    ['xz', header([[0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]]]), {}, { format: 'xz', detectedBy: 'content' }],
    ['zip', header([[0, 'PK\x03\x04']]), {}, { format: 'zip', detectedBy: 'content' }],
    ['tar (ustar at 257)', tarHeader('disk.qcow2'), {}, { format: 'tar', detectedBy: 'content' }],
    [
      'OVA: a tar whose first entry is an .ovf',
      tarHeader('appliance.OVF'),
      { fileName: 'x.tar' },
      { format: 'ova', detectedBy: 'content' },
    ],
    [
      'content beats a wrong hint and extension',
      header([[0, 'QFI\xfb']]),
      { formatHint: 'vmdk', fileName: 'a.raw' },
      { format: 'qcow2', detectedBy: 'content' },
    ],
    [
      '.img without signature is raw by extension',
      MBR,
      { fileName: 'disk.img' },
      { format: 'raw', detectedBy: 'extension', details: /disk\.img/ },
    ],
    ['a hint of raw for a signature-less file', ZEROS, { formatHint: 'RAW' }, { format: 'raw', detectedBy: 'hint' }],
    [
      'the hint beats the extension',
      ZEROS,
      { formatHint: 'parallels', fileName: 'x.img' },
      { format: 'parallels', detectedBy: 'hint' },
    ],
    [
      'extension from a URL name with a query string',
      ZEROS,
      { fileName: 'disk.img?token=1' },
      { format: 'raw', detectedBy: 'extension' },
    ],
    [
      'a qcow2 hint without a qcow2 signature is ignored',
      MBR,
      { formatHint: 'qcow2' },
      { format: 'raw', detectedBy: 'content', details: /hint 'qcow2' ignored/ },
    ],
    [
      'a .vmdk name without a vmdk signature is ignored',
      ZEROS,
      { fileName: 'x.vmdk' },
      { format: 'raw', detectedBy: 'content', details: /extension 'x.vmdk' ignored/ },
    ],
    [
      'MBR boot sector, no hint: raw, and says so',
      MBR,
      {},
      { format: 'raw', detectedBy: 'content', details: /MBR boot sector/ },
    ],
    ['GPT disk: raw, and says so', GPT, {}, { format: 'raw', detectedBy: 'content', details: /GPT/ }],
    [
      'unknown binary: raw, and says so',
      ZEROS,
      { fileName: 'noext' },
      { format: 'raw', detectedBy: 'content', details: /no known format signature/ },
    ],
    ['a file shorter than every signature', Buffer.from('hi'), {}, { format: 'raw', detectedBy: 'content' }],
    [
      'qcow version 1 (same magic, version 1)',
      header([
        [0, 'QFI\xfb'],
        [4, [0, 0, 0, 1]],
      ]),
      {},
      { format: 'qcow', detectedBy: 'content' },
    ],
    ['a LUKS volume', header([[0, 'LUKS\xba\xbe']]), { fileName: 'x.img' }, { format: 'luks', detectedBy: 'content' }],
    ['parallels', header([[0, 'WithoutFreeSpace']]), {}, { format: 'parallels', detectedBy: 'content' }],
    [
      'dmg (koly trailer)',
      ZEROS,
      { tail: Buffer.concat([Buffer.from('koly'), Buffer.alloc(508)]) },
      { format: 'dmg', detectedBy: 'content' },
    ],
  ];

  test.each(cases)('%s', (_name, buf, opts, expected) => {
    const info = detectFormat(buf, opts);
    expect(info.format).toBe(expected.format);
    expect(info.detectedBy).toBe(expected.detectedBy);
    if (expected.details) expect(info.details).toMatch(expected.details);
  });
});

describe('format names and extensions', () => {
  test.each([
    ['QCOW2', 'qcow2'],
    ['.vmdk', 'vmdk'],
    ['img', 'raw'],
    ['VHD', 'vpc'],
    ['gzip', 'gz'],
    [' OVA ', 'ova'],
    ['free text', undefined],
    ['', undefined],
  ])('normaliseFormat(%j) is %j', (input, expected) => {
    expect(normaliseFormat(input)).toBe(expected);
  });

  test.each([
    ['image.vmdk.gz', 'gz'],
    ['IMAGE.IMG', 'img'],
    ['a.ova?x=y', 'ova'],
    ['dir.d/noext', undefined],
    ['.hidden', undefined],
  ])('fileExtension(%j) is %j', (input, expected) => {
    expect(fileExtension(input)).toBe(expected);
  });

  test('the first tar entry name follows a pax header path record', () => {
    const pax = '30 path=a-very-long-name.ovf\n';
    const buf = Buffer.alloc(2048);
    buf.write('PaxHeader/x', 0);
    buf.write(`${pax.length.toString(8).padStart(11, '0')}\0`, 124);
    buf.write('x', 156);
    buf.write('ustar\x0000', 257, 'latin1');
    buf.write(pax, 512);
    expect(firstTarEntryName(buf)).toBe('a-very-long-name.ovf');
  });
});

/** A qcow2 header: version 3 unless said, with fields set at their offsets (big-endian). */
function qcow2(
  fields: {
    version?: number;
    backing?: string;
    crypt?: number;
    incompatible?: bigint;
    extensions?: Array<[number, string]>;
  } = {},
): Buffer {
  const buf = Buffer.alloc(64 * 1024);
  buf.write('QFI\xfb', 0, 'latin1');
  const version = fields.version ?? 3;
  buf.writeUInt32BE(version, 4);
  buf.writeUInt32BE(16, 20);
  buf.writeBigUInt64BE(1024n * 1024n, 24);
  buf.writeUInt32BE(fields.crypt ?? 0, 32);
  const headerLength = version === 3 ? 112 : 72;
  if (version === 3) {
    buf.writeBigUInt64BE(fields.incompatible ?? 0n, 72);
    buf.writeUInt32BE(4, 96);
    buf.writeUInt32BE(headerLength, 100);
  }
  let at = headerLength;
  for (const [type, data] of fields.extensions ?? []) {
    buf.writeUInt32BE(type, at);
    buf.writeUInt32BE(data.length, at + 4);
    buf.write(data, at + 8, 'latin1');
    at += 8 + Math.ceil(data.length / 8) * 8;
  }
  if (fields.backing) {
    buf.writeBigUInt64BE(2048n, 8);
    buf.writeUInt32BE(fields.backing.length, 16);
    buf.write(fields.backing, 2048, 'latin1');
  }
  return buf;
}

describe('qcow2 headers: only self-contained, unencrypted images pass', () => {
  test.each<[string, Buffer, RegExp | undefined]>([
    ['a plain version 3 image', qcow2(), undefined],
    ['a plain version 2 image', qcow2({ version: 2 }), undefined],
    ['a feature-name table extension is fine', qcow2({ extensions: [[0x6803f857, 'x'.repeat(48)]] }), undefined],
    ['a backing file', qcow2({ backing: '/etc/shadow' }), /backing file \(\/etc\/shadow\)/],
    ['a json: backing file', qcow2({ backing: 'json:{"driver":"nbd"}' }), /backing file \(json:/],
    ['AES encryption', qcow2({ crypt: 1 }), /encrypted \(AES\)/],
    ['LUKS encryption', qcow2({ crypt: 2 }), /encrypted \(LUKS\)/],
    ['the external data file bit', qcow2({ incompatible: 1n << 2n }), /external data file/],
    [
      'a data file name extension without the bit',
      qcow2({ extensions: [[0x44415441, '/root/.kamakirc']] }),
      /external data file \(\/root\/\.kamakirc\)/,
    ],
    ['a crypto header extension', qcow2({ extensions: [[0x0537be77, 'x'.repeat(16)]] }), /encryption header/],
    ['unknown incompatible features', qcow2({ incompatible: 1n << 40n }), /unknown incompatible/],
    ['version 4', qcow2({ version: 4 }), /version 4 is not supported/],
    [
      'a name that is not printable is shown safely',
      qcow2({ backing: '/tmp/\x1b[2Jx' }),
      /backing file \(\/tmp\/\?\[2Jx\)/,
    ],
  ])('%s', (_name, buf, expected) => {
    const problem = qcow2HeaderProblem(buf);
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });
});

describe('VMDK descriptors and other formats', () => {
  const desc = (lines: string) => `# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n${lines}\n`;
  test.each<[string, string, RegExp | undefined]>([
    ['monolithicSparse, one extent', desc('createType="monolithicSparse"\nRW 2048 SPARSE "disk.vmdk"'), undefined],
    ['streamOptimized, one extent', desc('createType="streamOptimized"\nRW 2048 SPARSE "disk.vmdk"'), undefined],
    [
      'a parent disk',
      desc('createType="monolithicSparse"\nparentFileNameHint="/var/lib/base.vmdk"\nRW 2048 SPARSE "d.vmdk"'),
      /parent disk \(\/var\/lib\/base\.vmdk\)/,
    ],
    [
      'a twoGbMaxExtentSparse type',
      desc('createType="twoGbMaxExtentSparse"\nRW 2048 SPARSE "d-s001.vmdk"'),
      /type 'twoGbMaxExtentSparse'/,
    ],
    [
      'two extents',
      desc('createType="monolithicSparse"\nRW 2048 SPARSE "a.vmdk"\nRW 2048 FLAT "/etc/passwd" 0'),
      /lists 2 extents/,
    ],
  ])('%s', (_name, text, expected) => {
    const problem = vmdkDescriptorProblem(text);
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });

  const vpcFooter = (type: number) => {
    const f = Buffer.alloc(512);
    f.write('conectix', 0, 'latin1');
    f.writeUInt32BE(type, 60);
    return f;
  };
  const vdi = (type: number) =>
    header([
      [0x40, [0x7f, 0x10, 0xda, 0xbe]],
      [0x4c, [type, 0, 0, 0]],
    ]);
  test.each<[string, string, Buffer, { tail?: Buffer }, RegExp | undefined]>([
    [
      'a VMDK descriptor file (data elsewhere)',
      'vmdk',
      header([[0, '# Disk DescriptorFile\n']]),
      {},
      /descriptor whose data lives in other files/,
    ],
    ['a COWD extent', 'vmdk', header([[0, 'COWD']]), {}, /multi-file VMDK/],
    ['a fixed VHD', 'vpc', MBR, { tail: vpcFooter(2) }, undefined],
    ['a differencing VHD', 'vpc', header([[0, vpcFooter(4)]]), {}, /differencing VHD/],
    ['a normal VDI', 'vdi', vdi(1), {}, undefined],
    ['a differencing VDI', 'vdi', vdi(4), {}, /type 4 \(differencing\)/],
    [
      'a QED with a backing file',
      'qed',
      header([
        [0, 'QED\0'],
        [16, [1]],
        [56, [0, 2, 0, 0]],
        [60, [4, 0, 0, 0]],
        [512, '/etc'],
      ]),
      {},
      /backing file \(\/etc\)/,
    ],
    ['dmg is not accepted', 'dmg', ZEROS, {}, /format 'dmg' is not accepted/],
    ['parallels is not accepted', 'parallels', ZEROS, {}, /not accepted/],
  ])('%s', (_name, format, buf, opts, expected) => {
    const problem = formatProblem(format, buf, opts);
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });
});

describe('what qemu-img info says about other files', () => {
  const base: QemuImgInfo = { format: 'qcow2', virtualSize: 1, extents: [], encrypted: false };
  test.each<[string, string, Partial<QemuImgInfo>, RegExp | undefined]>([
    ['nothing else', 'qcow2', {}, undefined],
    ['a backing file', 'qcow2', { backingFile: '/etc/shadow' }, /backing file/],
    ['a data file', 'qcow2', { dataFile: '/root/token' }, /external data file \(\/root\/token\)/],
    ['encrypted', 'qcow2', { encrypted: true }, /encrypted/],
    ['an extent that is the image itself', 'vmdk', { format: 'vmdk', extents: ['/w/disk.vmdk'] }, undefined],
    [
      'an extent elsewhere',
      'vmdk',
      { format: 'vmdk', extents: ['/w/disk.vmdk', '/etc/passwd'] },
      /other files \(\/etc\/passwd\)/,
    ],
    ['another format than asked', 'qcow2', { format: 'raw' }, /reads it as raw, not qcow2/],
  ])('%s', (_name, asked, info, expected) => {
    const problem = infoProblem({ ...base, ...info }, '/w/disk.vmdk', asked);
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });

  test('qemu-img opens our files through a json: spec naming the driver, a plain file and no backing file', () => {
    const spec = qemuImageSpec('/w/a,b "c".qcow2', 'qcow2');
    expect(spec.startsWith('json:')).toBe(true);
    expect(JSON.parse(spec.slice(5))).toEqual({
      driver: 'qcow2',
      file: { driver: 'file', filename: '/w/a,b "c".qcow2' },
      backing: null,
    });
  });

  test.each([
    ['    (0.00/100%)\r    (12.50/100%)\r', 12.5],
    ['    (100.00/100%)\r\n', 100],
    ['no progress here', undefined],
  ])('qemu-img -p output %j is %j percent', (text, expected) => {
    expect(qemuProgressPercent(text)).toBe(expected);
  });
});

describe('a file taken as raw must look like a disk', () => {
  const html = Buffer.from('\uFEFF  <!DOCTYPE html>\n<html><head><title>\n  Session expired </title></head></html>');
  test.each<[string, Buffer, number, RegExp | undefined]>([
    ['an MBR disk', MBR, 1024 * 1024, undefined],
    ['a GPT disk without a protective MBR', header([[512, 'EFI PART']]), 1024 * 1024, undefined],
    ['a GPT disk with 4 KiB sectors', header([[4096, 'EFI PART']]), 1024 * 1024, undefined],
    ['a bare ext4 filesystem', header([[1080, [0x53, 0xef]]]), 1024 * 1024, undefined],
    ['a bare XFS filesystem', header([[0, 'XFSB']]), 1024 * 1024, undefined],
    ['a bare btrfs filesystem', header([[0x10040, '_BHRfS_M']]), 1024 * 1024, undefined],
    ['an LVM physical volume', header([[512, 'LABELONE']]), 1024 * 1024, undefined],
    ['an HTML page, with a BOM and its title', html, html.length, /an HTML page \(title 'Session expired'\)/],
    ['an HTML fragment', Buffer.from('<div>oops</div><body>x</body>'), 30, /HTML page/],
    ['JSON', Buffer.from('{"error":"expired"}'), 19, /a JSON document/],
    ['a JSON array', Buffer.from('[ 1, 2 ]'), 8, /a JSON document/],
    [
      'XML',
      Buffer.from('<?xml version="1.0"?><!-- c --><ListBucketResult/>'),
      50,
      /an XML document \(root element <ListBucketResult>\)/,
    ],
    ['a PDF', Buffer.from('%PDF-1.7\n\xff\xfe', 'latin1'), 11, /a PDF document/],
    ['a signed image list', Buffer.from('MIME-Version: 1.0\nContent-Type: multipart/signed\n'), 50, /MIME message/],
    ['a text file', Buffer.from('hello world\nsecond line\n'), 24, /a text file \(first line 'hello world'\)/],
    ['an MBR disk of an odd size', MBR, 1024 * 1024 + 1, /size \(1048577 bytes\) is not a multiple of 512/],
    ['zeros', ZEROS, 1024 * 1024, /all zero/],
    [
      'unknown binary',
      header([[0, [1, 2, 3, 0]]]),
      1024 * 1024,
      /no partition table \(MBR or GPT\) and no known filesystem/,
    ],
  ])('%s', (_name, buf, size, expected) => {
    const problem = rawDiskProblem(buf, size);
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });

  test('describeNonDisk says nothing about binary content', () => {
    expect(describeNonDisk(MBR)).toBeUndefined();
  });
});
