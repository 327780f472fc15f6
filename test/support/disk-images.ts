import { open } from 'node:fs/promises';
import { execa } from 'execa';

/**
 * Writes an MBR with one Linux partition (type 0x83, from sector 2048 to the end) into a raw
 * disk, so that snf-mkimage (the real one via libguestfs, the fake by reading the MBR) sees a
 * partitioned disk rather than "unsupported media".
 */
export async function writeLinuxMbr(rawDisk: string, sizeBytes: number): Promise<void> {
  const mbr = Buffer.alloc(512);
  const entry = 446;
  const start = 2048;
  const sectors = Math.floor(sizeBytes / 512) - start;
  mbr[entry] = 0x80; // bootable
  mbr.writeUIntLE(0xfffffe, entry + 1, 3); // CHS start (unused, LBA)
  mbr[entry + 4] = 0x83; // Linux
  mbr.writeUIntLE(0xfffffe, entry + 5, 3); // CHS end
  mbr.writeUInt32LE(start, entry + 8);
  mbr.writeUInt32LE(sectors, entry + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const fh = await open(rawDisk, 'r+');
  try {
    await fh.write(mbr, 0, 512, 0);
  } finally {
    await fh.close();
  }
}

/** Converts a raw disk into a stream-optimised VMDK (the kind OVAs and vmcatcher caches carry). */
export async function toStreamOptimizedVmdk(rawDisk: string, vmdk: string): Promise<void> {
  await execa('qemu-img', [
    'convert',
    '-q',
    '-f',
    'raw',
    '-O',
    'vmdk',
    '-o',
    'subformat=streamOptimized',
    rawDisk,
    vmdk,
  ]);
}
