/**
 * Which list id (`dc:identifier`) a subscription or a list URL may speak for. The id inside a
 * signed list is the publisher's word, and an endorser is authorised per URL, not per id: left
 * unchecked, the signer of list A could publish list B's id and expire B's images. So a URL owns
 * one id, fixed by the site — the configuration's `subscriptions[].listId`, else the first id
 * accepted from it, pinned — and an id belongs to one subscription only.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { registryListId, registrySubscriptionKey, subscriptionKey, type Config } from '../core/config.js';

/**
 * Why `listId` is not the list at `url`'s to use according to the configuration: another
 * subscription's configured `listId`, or a registry project's `host/project`. Undefined when no
 * other subscription of the configuration claims it.
 */
export function listIdClaimedElsewhere(config: Config, url: string, listId: string): string | undefined {
  const key = subscriptionKey(url);
  const index = config.subscriptions.findIndex((s) => s.listId === listId && subscriptionKey(s.url) !== key);
  if (index >= 0)
    return `list id ${listId} is the subscription of ${subscriptionKey(config.subscriptions[index].url)}'s (its listId)`;
  const registry = config.registrySubscriptions.find((s) => registryListId(s.registry, s.project) === listId);
  if (registry) return `list id ${listId} is the registry project ${registrySubscriptionKey(registry)}'s`;
  return undefined;
}

/** Why a list carrying `listId` is refused for a URL pinned (configured or first accepted) to `pinned`. */
export function listIdMismatch(listId: string, pinned: { listId: string; by: string } | undefined): string | undefined {
  if (!pinned || pinned.listId === listId) return undefined;
  return `the list carries dc:identifier ${listId}, but this URL speaks for list ${pinned.listId} (${pinned.by})`;
}

/** The configuration's `listId` for a URL, if its subscription names one. */
function configuredListId(config: Config, url: string): string | undefined {
  const key = subscriptionKey(url);
  return config.subscriptions.find((s) => subscriptionKey(s.url) === key)?.listId;
}

const LIST_PINS_FILE = 'list-ids.json';

type Pins = Record<string, string>;

async function readPins(file: string): Promise<Pins> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  const pins = JSON.parse(text) as unknown;
  if (typeof pins !== 'object' || pins === null || Array.isArray(pins))
    throw new Error(`${file} is not a JSON object of list URL → list id`);
  return pins as Pins;
}

/**
 * `enqueue-from-image-list`'s durable pin: `<worker.workingFolder>/list-ids.json` maps each list
 * URL to the list id first enqueued from it. Returns why `listId` is refused for `url`, or
 * undefined after pinning it (written to a temporary file and renamed, so the file is always
 * whole). The configuration's `listId` wins over the file.
 */
export async function claimListIdForUrl(config: Config, url: string, listId: string): Promise<string | undefined> {
  const elsewhere = listIdClaimedElsewhere(config, url, listId);
  if (elsewhere) return elsewhere;
  const configured = configuredListId(config, url);
  if (configured) return listIdMismatch(listId, { listId: configured, by: 'subscriptions[].listId' });
  const file = path.join(config.worker.workingFolder, LIST_PINS_FILE);
  const pins = await readPins(file);
  const key = subscriptionKey(url);
  if (pins[key] !== undefined)
    return listIdMismatch(listId, { listId: pins[key], by: `first enqueued, pinned in ${file}` });
  await mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, `${JSON.stringify({ ...pins, [key]: listId }, null, 2)}\n`, { mode: 0o644 });
    await rename(temp, file);
  } finally {
    await rm(temp, { force: true });
  }
  return undefined;
}
