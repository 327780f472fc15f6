import { detectFormat, fileExtension, firstTarEntryName, normaliseFormat } from '../../activities/inspect.js';

/** A header of `size` zero bytes with `bytes` written at `offset`. */
function header(parts: Array<[number, string | number[]]>, size = 36 * 1024): Buffer {
  const buf = Buffer.alloc(size);
  for (const [offset, bytes] of parts) {
    if (typeof bytes === 'string') buf.write(bytes, offset, 'latin1');
    else Buffer.from(bytes).copy(buf, offset);
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
const GPT = header([[510, [0x55, 0xaa]], [512, 'EFI PART']]);
const ZEROS = header([]);
const footer = (() => {
  const t = Buffer.alloc(512);
  t.write('conectix', 0, 'latin1');
  return t;
})();

describe('detectFormat reads the format from content, and falls back to the hint and the extension only when content cannot tell', () => {
  const cases: Array<[string, Buffer, Parameters<typeof detectFormat>[1], { format: string; detectedBy: string; details?: RegExp }]> = [
    ['qcow2 magic', header([[0, 'QFI\xfb']]), {}, { format: 'qcow2', detectedBy: 'content' }],
    ['vmdk sparse extent', header([[0, 'KDMV']]), {}, { format: 'vmdk', detectedBy: 'content' }],
    ['vmdk descriptor-only file', header([[0, '# Disk DescriptorFile\nversion=1\n']]), {}, { format: 'vmdk', detectedBy: 'content', details: /descriptor/ }],
    ['VDI signature at 0x40', header([[0, '<<< Oracle VM VirtualBox Disk Image >>>\n'], [0x40, [0x7f, 0x10, 0xda, 0xbe]]]), {}, { format: 'vdi', detectedBy: 'content' }],
    ['dynamic VHD (conectix at 0)', header([[0, 'conectix']]), {}, { format: 'vpc', detectedBy: 'content' }],
    ['fixed VHD (conectix footer in the last 512 bytes)', MBR, { tail: footer }, { format: 'vpc', detectedBy: 'content', details: /fixed/ }],
    ['vhdx', header([[0, 'vhdxfile']]), {}, { format: 'vhdx', detectedBy: 'content' }],
    ['qed', header([[0, 'QED\0']]), {}, { format: 'qed', detectedBy: 'content' }],
    ['ISO 9660 (CD001 at 0x8001)', header([[0x8001, 'CD001']]), {}, { format: 'iso', detectedBy: 'content' }],
    ['gzip', header([[0, [0x1f, 0x8b, 0x08]]]), { fileName: 'image.qcow2' }, { format: 'gz', detectedBy: 'content' }],
    ['bzip2', header([[0, 'BZh9']]), {}, { format: 'bz2', detectedBy: 'content' }],
    ['xz', header([[0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]]]), {}, { format: 'xz', detectedBy: 'content' }],
    ['zip', header([[0, 'PK\x03\x04']]), {}, { format: 'zip', detectedBy: 'content' }],
    ['tar (ustar at 257)', tarHeader('disk.qcow2'), {}, { format: 'tar', detectedBy: 'content' }],
    ['OVA: a tar whose first entry is an .ovf', tarHeader('appliance.OVF'), { fileName: 'x.tar' }, { format: 'ova', detectedBy: 'content' }],
    ['content beats a wrong hint and extension', header([[0, 'QFI\xfb']]), { formatHint: 'vmdk', fileName: 'a.raw' }, { format: 'qcow2', detectedBy: 'content' }],
    ['.img without signature is raw by extension', MBR, { fileName: 'disk.img' }, { format: 'raw', detectedBy: 'extension', details: /disk\.img/ }],
    ['a hint of raw for a signature-less file', ZEROS, { formatHint: 'RAW' }, { format: 'raw', detectedBy: 'hint' }],
    ['the hint beats the extension', ZEROS, { formatHint: 'parallels', fileName: 'x.img' }, { format: 'parallels', detectedBy: 'hint' }],
    ['extension from a URL name with a query string', ZEROS, { fileName: 'disk.img?token=1' }, { format: 'raw', detectedBy: 'extension' }],
    ['a qcow2 hint without a qcow2 signature is ignored', MBR, { formatHint: 'qcow2' }, { format: 'raw', detectedBy: 'content', details: /hint 'qcow2' ignored/ }],
    ['a .vmdk name without a vmdk signature is ignored', ZEROS, { fileName: 'x.vmdk' }, { format: 'raw', detectedBy: 'content', details: /extension 'x.vmdk' ignored/ }],
    ['MBR boot sector, no hint: raw, and says so', MBR, {}, { format: 'raw', detectedBy: 'content', details: /MBR boot sector/ }],
    ['GPT disk: raw, and says so', GPT, {}, { format: 'raw', detectedBy: 'content', details: /GPT/ }],
    ['unknown binary: raw, and says so', ZEROS, { fileName: 'noext' }, { format: 'raw', detectedBy: 'content', details: /no known format signature/ }],
    ['a file shorter than every signature', Buffer.from('hi'), {}, { format: 'raw', detectedBy: 'content' }],
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
