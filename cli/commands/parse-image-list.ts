import { Command, Option } from 'clipanion';
import type { ImageList, ImageListImage } from '../../image-lists/parse.js';
import type { ReadImageList } from '../../image-lists/read.js';
import type { SignatureStatus } from '../../image-lists/signature.js';
import { EXIT, type Say } from '../base-command.js';
import { ImageListCommand } from '../image-list-command.js';

export class ParseImageListCommand extends ImageListCommand {
  static override paths = [['parse-image-list']];
  static override usage = Command.Usage({
    description: 'Fetch, verify and parse an image list, and show its images',
    details: `
      Prints the list, its signature status and one row per image (smallest first, as the
      original sorted by hv:size) on stdout; invalid image entries are reported on stderr.
      Exits 1 when the list cannot be fetched or the signature policy refuses it.
    `,
    examples: [
      [
        'Show an AppDB VO list',
        '$0 parse-image-list --image-list-url https://vmcaster.appdb.egi.eu/store/vo/fedcloud.egi.eu/image.list --token-file /etc/snf-vmcatcher/appdb.token',
      ],
      ['Machine-readable output', '$0 parse-image-list --image-list-url file:///srv/lists/image.list --json'],
    ],
  });

  json = Option.Boolean('--json', false, { description: 'Print the parsed list as JSON' });

  async run(): Promise<number> {
    const read = await this.readList();
    reportInvalid(read, this.say);
    this.say.note(`Found ${read.list.images.length} events`);
    if (this.json) {
      this.out(
        JSON.stringify(
          { url: read.url, signature: read.signature, imageList: read.list, invalid: read.invalid },
          null,
          2,
        ),
      );
    } else {
      this.out(renderImageList(read.list, read.signature));
    }
    return EXIT.ok;
  }
}

/** Each invalid image entry of a list, as a warning: the list is used without it. */
export function reportInvalid(read: Pick<ReadImageList, 'invalid'>, say: Pick<Say, 'warn'>): void {
  for (const entry of read.invalid) {
    say.warn(
      `Invalid image #${entry.index}${entry.identifier ? ` (dc:identifier = ${entry.identifier})` : ''} skipped: ${entry.problem}`,
    );
  }
}

/** Smallest first, as the original's parse-image-list; ties keep list order. */
function sortBySize(images: readonly ImageListImage[]): ImageListImage[] {
  return images
    .map((image, i) => ({ image, i }))
    .sort((a, b) => a.image.size - b.image.size || a.i - b.i)
    .map(({ image }) => image);
}

function describeSignature(signature: SignatureStatus): string {
  const signer = signature.signer ? ` (signer ${signature.signer.subject}, issuer ${signature.signer.issuer})` : '';
  if (signature.status === 'verified') return `verified${signer}`;
  return `${signature.status}: ${signature.detail ?? ''}${signer}${signature.warning ? ' [accepted by policy]' : ''}`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows
    .map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  '))
    .join('\n');
}

function renderImageList(list: ImageList, signature: SignatureStatus): string {
  const flags = [list.expired ? 'EXPIRED' : '', list.createdInFuture ? 'CREATED IN THE FUTURE' : ''].filter(Boolean);
  const header = [
    `Image list: ${list.identifier}${list.title ? ` "${list.title}"` : ''}`,
    list.vo ? `VO:         ${list.vo}` : '',
    list.version ? `Version:    ${list.version}` : '',
    `Created:    ${list.created ?? '-'}`,
    `Expires:    ${list.expires ?? '-'}${flags.length ? ` [${flags.join(', ')}]` : ''}`,
    list.endorser?.dn ? `Endorser:   ${list.endorser.dn} (CA ${list.endorser.ca ?? '-'})` : '',
    `Signature:  ${describeSignature(signature)}`,
    `Images:     ${list.images.length}`,
  ].filter(Boolean);
  const rows = [['IDENTIFIER', 'SIZE', 'FORMAT', 'VERSION', 'OS', 'TITLE', 'URI']];
  for (const image of sortBySize(list.images)) {
    const os = [image.osName ?? image.os, image.osVersion].filter(Boolean).join(' ');
    rows.push([
      image.identifier,
      String(image.size),
      image.format ?? '-',
      image.version ?? '-',
      os || '-',
      image.title ?? '-',
      image.uri,
    ]);
  }
  return `${header.join('\n')}\n\n${table(rows)}`;
}
