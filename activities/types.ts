import type { DiskFormat } from '../core/workflow-contract.js';
/**
 * The inputs and results of the image pipeline
 * activities. The inputs and results cross Temporal (workflow history), so they are plain JSON: no
 * Buffers, Dates, class instances or secrets. Workflow code imports these with `import type`.
 */
import type { ImageEvent } from '../core/event.js';

export interface AcquireInput {
  /** Names the per-workflow work folder; the same id finds the same folder on a retry. */
  workflowId: string;
  event: ImageEvent;
  /** Accept any TLS certificate for this download (the original -insecure-ssl). */
  insecureSsl?: boolean;
  /** Name of a credential in the worker's `security.credentials`; the secret never travels. */
  credentialName?: string;
}

export interface AcquiredImage {
  workDir: string;
  path: string;
  bytes: number;
  /** The file's sha512 (every image but a registry layer, which is named and checked by its sha256). */
  sha512?: string;
  /** The sha256, when the event names one (checked in the same pass as the sha512), or a registry layer's digest. */
  sha256?: string;
  source: 'vmcatcher-cache' | 'download' | 'file';
  /** The file name the image was published under (last URL segment or cache file name). */
  fileName?: string;
  /**
   * The host's verified copy of the revision, which another cloud's registration got, linked into
   * this work folder: nothing was downloaded (activities/verified-files.ts).
   */
  shared?: boolean;
}

export interface InspectInput {
  path: string;
  /** `hv:format` or `--format`: used only when the content cannot tell. */
  formatHint?: string;
  /** The published file name, whose extension is the last resort. */
  fileName?: string;
}

export interface ImageFormatInfo {
  /** raw|qcow2|vmdk|vdi|vpc|vhdx|qed|iso|gz|bz2|xz|zip|tar|ova */
  format: string;
  detectedBy: 'content' | 'qemu-img' | 'hint' | 'extension';
  virtualSize?: number;
  details?: string;
}

export interface ConvertInput {
  /** The work folder's owner: one attempt at a time holds it (activities/workspace.ts). */
  workflowId: string;
  path: string;
  workDir: string;
  format: string;
  /** The formats the registration's cloud takes, preferred first (its host claim's); absent in inputs recorded before. */
  diskFormats?: DiskFormat[];
}

export interface RawImage {
  path: string;
  /**
   * What the file is: `raw`, or the image's own format when the cloud takes it as it is (a qcow2
   * for a Glance cloud that allows qcow2). Absent in results recorded before there was a choice: raw.
   */
  format?: 'raw' | 'qcow2';
  virtualSize: number;
  bytes: number;
  /** What was done, in order, e.g. ["gunzip image.vmdk.gz", "qemu-img convert vmdk→raw"]. */
  steps: string[];
}

/**
 * Heartbeat details of a download: the progress the Web UI shows (`step`, `bytesDone`,
 * `bytesTotal`), and the resume point a retry reads back (`offset`: bytes of the partial file
 * known to be on disk; `total`: hv:size).
 */
export type DownloadProgress = {
  step: string;
  bytesDone?: number;
  bytesTotal?: number;
  offset: number;
  total?: number;
};
