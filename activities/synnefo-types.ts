/**
 * Inputs and results of the Synnefo activities (prepare, register, expire). Plain JSON: they
 * cross Temporal's history. Workflow code imports these with `import type`.
 */
import type { ImageEvent } from '../core/event.js';
import type { RegistrationOptions } from '../core/workflow-contract.js';

export interface PrepareInput {
  rawPath: string;
  workDir: string;
  event: ImageEvent;
  options: RegistrationOptions;
}

export interface PreparedImage {
  /** The file to upload: snf-mkimage's output, or the raw image when preparation is off. */
  path: string;
  /** The `properties` of snf-mkimage's `.meta` file (empty when not prepared). */
  metadata: Record<string, string>;
  prepared: boolean;
}

export interface RegisterInput {
  path: string;
  event: ImageEvent;
  options: RegistrationOptions;
  metadata: Record<string, string>;
}

export interface RegisteredImage {
  imageId: string;
  name: string;
  /** `pithos://<owner uuid>/<container>/<object>` */
  location: string;
  /** True when an image with the same identity already existed and was kept. */
  reused: boolean;
  isPublic: boolean;
  properties: Record<string, string>;
}

export interface FindImageInput {
  event: ImageEvent;
  options: RegistrationOptions;
}

export interface ExpireInput {
  event: ImageEvent;
  options: RegistrationOptions;
}

export interface ExpireResult {
  action: 'make-private' | 'unregister';
  imageIds: string[];
}
