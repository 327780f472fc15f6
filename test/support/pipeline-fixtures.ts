import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { parseConfig, type Config } from '../../core/config.js';

/** A silent logger for activity tests. */
export const quietLogger = pino({ level: 'silent' });

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Configuration for pipeline tests: everything under `workingFolder`, other keys overridable. */
export function pipelineConfig(workingFolder: string, security: Record<string, unknown> = {}): Config {
  return parseConfig({ worker: { workingFolder }, security }, 'test');
}

/**
 * A sparse raw disk of `mib` MiB with random data in a few regions (so conversion has real
 * content to carry, and holes to keep), and an MBR boot signature.
 */
export async function makeRawDisk(file: string, mib: number): Promise<void> {
  await execa('qemu-img', ['create', '-q', '-f', 'raw', file, `${mib}M`]);
  const fh = await open(file, 'r+');
  try {
    for (const at of [0, Math.floor(mib / 2), mib - 1]) {
      await fh.write(randomBytes(512 * 1024), 0, 512 * 1024, at * 1024 * 1024);
    }
    await fh.write(Buffer.from([0x55, 0xaa]), 0, 2, 510);
  } finally {
    await fh.close();
  }
}

export async function qemuConvert(
  from: string,
  fromFormat: string,
  to: string,
  toFormat: string,
  options: string[] = [],
): Promise<void> {
  await execa('qemu-img', ['convert', '-q', '-f', fromFormat, '-O', toFormat, ...options, from, to]);
}

/** An OVF descriptor for the given disks; `boot` is the file the hardware section attaches at address 0. */
export function ovfFor(disks: Array<{ href: string; address: number }>): string {
  const files = disks.map((d, i) => `<File ovf:id="file${i}" ovf:href="${d.href}"/>`).join('\n    ');
  const diskElems = disks
    .map(
      (_d, i) =>
        `<Disk ovf:diskId="vmdisk${i}" ovf:fileRef="file${i}" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>`,
    )
    .join('\n    ');
  const items = disks
    .map(
      (d, i) => `<Item>
        <rasd:AddressOnParent>${d.address}</rasd:AddressOnParent>
        <rasd:ElementName>disk${i}</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk${i}</rasd:HostResource>
        <rasd:InstanceID>${10 + i}</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>`,
    )
    .join('\n      ');
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    ${files}
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    ${diskElems}
  </DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      ${items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}

/** Writes a tar with the given members in this order (GNU tar, so the OVF can come first). */
export async function makeTar(
  file: string,
  dir: string,
  members: string[],
  opts: { gzip?: boolean } = {},
): Promise<void> {
  await execa('tar', [opts.gzip ? '-czf' : '-cf', file, '-C', dir, ...members]);
}

export { writeFile };
