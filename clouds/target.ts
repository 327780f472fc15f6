/**
 * A cloud the images are registered on, and the inputs and results of its steps. The generic
 * activities (findRegisteredImage, prepareImage, registerWithKamaki, expireRegisteredImages)
 * hand their work to the target `clouds/index.ts` chooses, so a new cloud is a new folder here
 * behind this interface (clouds/synnefo/ is the first).
 *
 * The inputs and results cross Temporal's history: plain JSON, no Buffers, Dates, class
 * instances or secrets.
 */
import type { CheckResult, HealthContext } from '../core/health.js';
import type { DiskFormat, ExpireImageResult, ImageRequest, RegistrationOptions } from '../core/workflow-contract.js';

export type { DiskFormat } from '../core/workflow-contract.js';

export interface CloudTarget {
  /** Names the kind of cloud in logs and errors, e.g. 'synnefo'. */
  readonly kind: string;
  /**
   * The disk formats this cloud takes, preferred first. convertToRaw keeps an image that is in one
   * of them as it is and converts any other to the first of them it can write (raw when listed).
   */
  readonly diskFormats: readonly DiskFormat[];
  /**
   * The image this cloud already holds for the request's image revision (same identity
   * properties, our account only), with its visibility brought in line with the site's setting;
   * null (plain JSON, as the activity returns it) when there is none. Runs on the shared queue:
   * it touches no file.
   */
  findImage(req: ImageRequest): Promise<RegisteredImage | null>;
  /**
   * Turns the raw disk into what the cloud takes, in the work folder (Synnefo: snf-mkimage). A
   * cloud with nothing to do returns the raw disk. Runs on the host queue, next to the file.
   */
  prepare(input: PrepareInput): Promise<PreparedImage>;
  /** Uploads and registers the prepared image (or reuses the one already there). Host queue. */
  publish(input: PublishInput & { format: string }): Promise<RegisteredImage>;
  /** The event's image was expired: hide or unregister what was registered for it. Shared queue. */
  expire(req: ImageRequest): Promise<ExpireImageResult>;
  /**
   * Every image our account holds for one image list (identity properties and owner: never another
   * tenant's), for a subscription's sync to compare with the list. Shared queue.
   */
  inventory(req: InventoryRequest): Promise<CloudInventory>;
}

/**
 * What `doctor` checks of a target, from the configuration alone (no worker runs), each at its
 * place in the health check's order. Every check catches its own failures.
 */
export interface TargetChecks {
  /** The cloud answers our login (after Temporal, before the CA folder). */
  cloud(ctx: HealthContext): Promise<CheckResult[]>;
  /** The tools `prepare` runs can run (after the working folder's free space); a skip when there are none. */
  preparation(ctx: HealthContext): Promise<CheckResult[]>;
}

/** Which images `inventory` lists: those of one image list, as the registrations' options reach the cloud. */
export interface InventoryRequest {
  listId: string;
  options: RegistrationOptions;
}

/** An image of a list that our account holds in the cloud. */
export interface CloudImage {
  /** The cloud's id of the image. */
  cloudImageId: string;
  /** The list's `dc:identifier` of the image (identity property, as stored). */
  imageId: string;
  /** The revision identity property (`sha512-…`, `v-…`). */
  revision: string;
  /** The full sha512 when the image carries it: needed to expire exactly this revision. */
  checksumSha512?: string;
  /** The full sha256 of a registry image's disk layer (provenance property), the same way. */
  checksumSha256?: string;
  /**
   * Still offered to users, i.e. not (yet) what a `make-private` expiry leaves. Synnefo: public.
   * Glance: active or not private (its expiry deactivates the image and makes it private).
   */
  isPublic: boolean;
  /** The title and version its registration stored (provenance properties), to name it when it is expired. */
  title?: string;
  version?: string;
}

export interface CloudInventory {
  images: CloudImage[];
  /**
   * What expiry does on this cloud: with `make-private`, an image already private needs nothing
   * more; with `unregister`, an expired image must leave the cloud even if it is private. Glance's
   * `deactivate` is `make-private` (the image stays, hidden and unbootable), its `delete` is `unregister`.
   */
  expireAction: 'make-private' | 'unregister';
}

export interface PrepareInput extends ImageRequest {
  /** convertToRaw's result: a raw disk, or a qcow2 kept as it is when the cloud takes qcow2. */
  rawPath: string;
  workDir: string;
}

export interface PreparedImage {
  /** The file to upload: the prepared image, or the raw image when there was nothing to prepare. */
  path: string;
  /** Metadata the preparation found in the image (Synnefo: snf-mkimage's `.meta` properties). */
  metadata: Record<string, string>;
  prepared: boolean;
}

export interface PublishInput extends ImageRequest {
  path: string;
  metadata: Record<string, string>;
  /**
   * The disk format of the file, as the pipeline detected or wrote it (convertToRaw's result; a
   * preparation keeps it). Absent in inputs recorded before it was passed: the host step detects it.
   */
  format?: string;
}

export interface RegisteredImage {
  imageId: string;
  name: string;
  /** Where the image's data is stored (Synnefo: `pithos://<owner uuid>/<container>/<object>`). */
  location: string;
  /** True when an image with the same identity already existed and was kept. */
  reused: boolean;
  isPublic: boolean;
  properties: Record<string, string>;
}
