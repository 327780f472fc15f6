/**
 * The manifests this service reads from a registry and what it takes from them: the OCI image
 * manifest (what `oras push` writes, with the empty config of image-spec 1.1 or oras' own config
 * type) and the short-lived OCI artifact manifest of oras 1.0; one layer of media type
 * `application/x-qemu-disk` is the disk image, and the manifest's annotations describe it the
 * way EGI publishes (org.openstack.glance.*, eu.egi.cloud.*). Pure: no I/O.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { InvalidInputError } from '../core/errors.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_ARTIFACT_MANIFEST = 'application/vnd.oci.artifact.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
/** The manifests a disk image may come in: asked for in this order. */
export const ACCEPTED_MANIFESTS = [OCI_MANIFEST, OCI_ARTIFACT_MANIFEST] as const;
/** The layer that is the disk image (EGI, oras push `file.qcow2:application/x-qemu-disk`). */
const DISK_LAYER = 'application/x-qemu-disk';

const Digest = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be sha256: and 64 lower-case hexadecimal digits');
const Annotations = z.record(z.string(), z.string()).optional();
const DescriptorSchema = z.object({
  mediaType: z.string().min(1),
  digest: Digest,
  size: z.number().int().nonnegative(),
  annotations: Annotations,
  urls: z.array(z.string()).optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

const ImageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.literal(OCI_MANIFEST).optional(),
  artifactType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: Annotations,
});
const ArtifactManifestSchema = z.object({
  mediaType: z.literal(OCI_ARTIFACT_MANIFEST),
  artifactType: z.string().min(1),
  blobs: z.array(DescriptorSchema).default([]),
  annotations: Annotations,
});

/** A manifest as this service uses it: its digest, the disk layer and the annotations. */
export interface DiskManifest {
  /** `sha256:…` of the manifest's bytes. */
  digest: string;
  mediaType: string;
  artifactType?: string;
  configMediaType?: string;
  disk: Descriptor;
  annotations: Record<string, string>;
}

/** The digest of bytes as a registry names them. */
export function sha256Digest(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * Reads a manifest fetched as `reference` (a tag or a digest). The content type the registry
 * sent and the document's own mediaType must agree and be one this service reads; a manifest
 * fetched by digest must have that digest; the registry's Docker-Content-Digest, when sent, must
 * be the digest of the bytes. Throws InvalidInputError naming what was wrong.
 */
export function readDiskManifest(
  where: string,
  bytes: Buffer,
  contentType: string | undefined,
  reference: string,
  headerDigest?: string,
): DiskManifest {
  const digest = sha256Digest(bytes);
  if (reference.startsWith('sha256:') && reference !== digest) {
    throw new InvalidInputError(`${where}: the manifest's bytes have digest ${digest}, not ${reference} as asked`);
  }
  if (headerDigest && headerDigest !== digest) {
    throw new InvalidInputError(
      `${where}: the registry says the manifest is ${headerDigest}, but its bytes have digest ${digest}`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new InvalidInputError(`${where}: the manifest is not JSON`);
  }
  const declared =
    typeof (doc as { mediaType?: unknown })?.mediaType === 'string'
      ? (doc as { mediaType: string }).mediaType
      : undefined;
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase() || declared || OCI_MANIFEST;
  if (declared && declared !== type) {
    throw new InvalidInputError(`${where}: the registry sent it as ${type}, but the manifest says it is ${declared}`);
  }
  if (type === OCI_INDEX || type === DOCKER_MANIFEST_LIST) {
    throw new InvalidInputError(
      `${where}: is an index of several manifests (${type}), not one disk image; select a tag that names an image manifest`,
    );
  }
  if (!(ACCEPTED_MANIFESTS as readonly string[]).includes(type)) {
    const hint = type === DOCKER_MANIFEST ? ' (a container image, not a disk image pushed with oras)' : '';
    throw new InvalidInputError(
      `${where}: manifest type ${type} is not supported${hint}; expected ${ACCEPTED_MANIFESTS.join(' or ')}`,
    );
  }
  const parsed = type === OCI_MANIFEST ? ImageManifestSchema.safeParse(doc) : ArtifactManifestSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InvalidInputError(
      `${where}: not a valid ${type}: ${issue.path.join('.') || '(document)'}: ${issue.message}`,
    );
  }
  const layers = 'layers' in parsed.data ? parsed.data.layers : parsed.data.blobs;
  const disks = layers.filter((l) => l.mediaType === DISK_LAYER);
  if (disks.length !== 1) {
    const found = layers.map((l) => l.mediaType).join(', ') || 'none';
    throw new InvalidInputError(
      `${where}: expected exactly one layer of type ${DISK_LAYER}, found ${disks.length} (layers: ${found})`,
    );
  }
  if (disks[0].urls?.length)
    throw new InvalidInputError(
      `${where}: the disk layer names external URLs (a foreign layer); only blobs the registry holds are read`,
    );
  return {
    digest,
    mediaType: type,
    artifactType: parsed.data.artifactType,
    configMediaType: 'config' in parsed.data ? parsed.data.config.mediaType : undefined,
    disk: disks[0],
    annotations: parsed.data.annotations ?? {},
  };
}
