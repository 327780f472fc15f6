import type { ImageEvent } from '../../core/event.js';
import type { Fetcher } from './fetcher.js';
import { localFileFetcher } from './file.js';
import { httpFetcher } from './http.js';
import { registryBlobFetcher } from './registry-blob.js';
import { vmcatcherCacheFetcher } from './vmcatcher-cache.js';

/**
 * The ways to get an image, asked in this order: the first that takes the event fetches it. A
 * cache file needs no URL; of the URLs, `file:` is used in place, a registry event's layer comes
 * by digest with the registry's auth, and anything else is downloaded.
 */
const FETCHERS: readonly Fetcher[] = [vmcatcherCacheFetcher, localFileFetcher, registryBlobFetcher, httpFetcher];

/** The fetcher for an event; throws InvalidInputError (from imageUrl) for an event no fetcher can get. */
export function fetcherFor(event: ImageEvent): Fetcher {
  const fetcher = FETCHERS.find((f) => f.takes(event));
  // imageUrl accepts file, http and https only, and one of the fetchers takes each.
  if (!fetcher) throw new Error(`no fetcher takes the event's URI`);
  return fetcher;
}
