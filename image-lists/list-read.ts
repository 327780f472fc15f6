/**
 * A list subscription's read as its sync run takes it, from the read of the list (the
 * `readSubscribedList` activity's result). Pure: the workflow of runs begun before every source had
 * one read step (workflows/sync-image-list.ts) turns that activity's result into the same.
 */
import {
  invalidEntriesKept,
  subscriptionOptions,
  type AcceptedList,
  type ListedImage,
  type SubscriptionRead,
  type SubscriptionReadInput,
  type SubscriptionSpec,
} from '../core/workflow-contract.js';

export interface ReadSubscribedListInput {
  subscription: SubscriptionSpec;
  previous?: Pick<
    AcceptedList,
    'listId' | 'version' | 'created' | 'expires' | 'signerPem' | 'selection' | 'etag' | 'lastModified'
  >;
}

export type ReadSubscribedListResult =
  | { notModified: true }
  | {
      notModified: false;
      list: {
        identifier: string;
        title?: string;
        version?: string;
        vo?: string;
        created?: string;
        expires?: string;
      };
      images: ListedImage[];
      invalid: Array<{ identifier?: string; problem: string }>;
      /** The verified signer's certificate, kept with the accepted copy for the next 304. */
      signerPem?: string;
      /** The subscription's `images` and `vo` this read applied. */
      selection: string;
      etag?: string;
      lastModified?: string;
    };

/**
 * A list subscription's read for its sync run: the list read by `readList` (conditional on the
 * validators of the copy accepted last), made the run's accepted copy, with its invalid entries kept.
 */
export async function listRead(
  readList: (input: ReadSubscribedListInput) => Promise<ReadSubscribedListResult>,
  { subscription, previous }: SubscriptionReadInput,
): Promise<SubscriptionRead> {
  // The list's credential fetches the list only; its images are fetched as their URLs say.
  const options = subscriptionOptions(subscription, false);
  const read = await readList({
    subscription,
    previous: previous && {
      listId: previous.listId,
      version: previous.version,
      created: previous.created,
      expires: previous.expires,
      signerPem: previous.signerPem,
      selection: previous.selection,
      etag: previous.etag,
      lastModified: previous.lastModified,
    },
  });
  if (read.notModified) return { notModified: true, options };
  const accepted: AcceptedList = {
    listId: read.list.identifier,
    version: read.list.version,
    created: read.list.created,
    expires: read.list.expires,
    signerPem: read.signerPem,
    selection: read.selection,
    etag: read.etag,
    lastModified: read.lastModified,
    images: read.images,
  };
  if (read.invalid.length) accepted.invalid = read.invalid;
  // An entry that failed validation is not a removal: its image stays.
  return { notModified: false, options, accepted, invalid: read.invalid, ...invalidEntriesKept(read.invalid) };
}
