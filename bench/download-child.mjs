// Runs our acquire activity's download (acquireImage with an http URL: sha512 and size checked
// while streaming to disk) in a process of its own, so its peak RSS (VmHWM) is the download's.
// Uses the compiled product (dist/), as the worker does. Prints one JSON line.
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { acquireImage } from '../dist/activities/acquire.js';
import { parseConfig } from '../dist/core/config.js';
import { ImageEventSchema } from '../dist/core/event.js';

const [url, size, sha512, workingFolder, id] = process.argv.slice(2);
const config = parseConfig({ worker: { workingFolder }, security: { maxImageBytes: 64 * 1024 ** 3 } }, 'bench');
const event = ImageEventSchema.parse({
  origin: 'command',
  imageListId: 'bench',
  imageId: id,
  uri: url,
  size: Number(size),
  checksumSha512: sha512,
});
const start = process.hrtime.bigint();
const got = await acquireImage({ config, logger: pino({ level: 'silent' }) }, { workflowId: `bench-${id}`, event });
const ms = Number(process.hrtime.bigint() - start) / 1e6;
const status = readFileSync('/proc/self/status', 'utf8');
const kib = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
process.stdout.write(
  `${JSON.stringify({ ms, bytes: got.bytes, path: got.path, sha512ok: got.sha512 === sha512, vmHwmKiB: kib('VmHWM'), vmRssKiB: kib('VmRSS') })}\n`,
);
