/**
 * A registry image → the image event every source produces (core/event.ts), so registry images
 * flow through the same workflows as list images. The annotations EGI sets become the event's
 * fields where the event has one (os_distro → osName, …) and, for an allow-list of descriptive
 * keys, as EGI names them in Glance, the image's properties, so monitoring that looks for them
 * finds them. The image's identity (list id, image id) is the caller's: the configuration's
 * registry and project and the repository's name, never an annotation. Pure: no I/O.
 */
import { ImageEventSchema, type ImageEvent } from '../core/event.js';
import type { DiskManifest } from './manifest.js';

const GLANCE = 'org.openstack.glance.';

/** Annotation → event field, for the annotations the event has a field for. */
const ANNOTATION_FIELDS = {
  [`${GLANCE}disk_format`]: 'format',
  [`${GLANCE}os_distro`]: 'osName',
  [`${GLANCE}os_version`]: 'osVersion',
  [`${GLANCE}os_type`]: 'os',
  [`${GLANCE}architecture`]: 'arch',
  'eu.egi.cloud.description': 'description',
  'org.opencontainers.image.title': 'title',
} as const satisfies Record<string, keyof ImageEvent>;

/** The property an image registered from a registry carries: the digest of the manifest it was read from. */
export const REF_DIGEST = 'org.opencontainers.image.ref.digest';

/** When the manifest was made (oras and EGI's pipeline set it): what tells an older image of a tag from a newer. */
export const CREATED = 'org.opencontainers.image.created';

/**
 * The annotations that become image properties, and the property each becomes (as EGI's sync
 * names them in Glance). An allow-list of descriptive keys: the publisher describes its image,
 * and nothing else. Everything else is ignored, so an annotation can never set an identity
 * property (VMCATCHER_*), a checksum, or what snf-image acts on at deploy time (ROOT_PARTITION,
 * USERS, OSFAMILY, EXCLUDE_*, SWAP, PASSWORD…), nor a Glance property Nova acts on (hw_*,
 * img_*, os_secure_boot…): `org.openstack.glance.ROOT_PARTITION` is dropped like any key not listed.
 */
export const ANNOTATION_PROPERTIES: Readonly<Record<string, string>> = {
  [`${GLANCE}os_distro`]: 'os_distro',
  [`${GLANCE}os_version`]: 'os_version',
  [`${GLANCE}os_type`]: 'os_type',
  [`${GLANCE}architecture`]: 'architecture',
  [`${GLANCE}os_admin_user`]: 'os_admin_user',
  [`${GLANCE}disk_format`]: 'disk_format',
  [`${GLANCE}container_format`]: 'container_format',
  'eu.egi.cloud.description': 'eu.egi.cloud.description',
  'eu.egi.cloud.tag': 'eu.egi.cloud.tag',
  'org.opencontainers.image.revision': 'org.opencontainers.image.revision',
  'org.opencontainers.image.source': 'org.opencontainers.image.source',
  [CREATED]: CREATED,
};

/**
 * The image's properties from the allow-listed annotations (ANNOTATION_PROPERTIES), named as
 * EGI's sync names them in Glance: `org.openstack.glance.os_distro` → `os_distro`, the others
 * under their own name (eu.egi.cloud.tag, org.opencontainers.image.revision, …).
 */
export function annotationProperties(annotations: Record<string, string>): Record<string, string> {
  const properties: Record<string, string> = {};
  for (const [key, value] of Object.entries(annotations)) {
    const property = Object.hasOwn(ANNOTATION_PROPERTIES, key) ? ANNOTATION_PROPERTIES[key] : undefined;
    if (property && value !== '') properties[property] = value;
  }
  return properties;
}

interface RegistryImage {
  /** `registry.egi.eu/egi_vm_images`: the "image list" a registry project stands for. */
  listId: string;
  /** Base URL of the registry (`https://registry.egi.eu/`). */
  registry: URL;
  project: string;
  /** The repository, project included (`egi_vm_images/ubuntu`). */
  repository: string;
  tag: string;
  manifest: DiskManifest;
  vo?: string;
}

/** The repository's name inside its project (`egi_vm_images/ubuntu` → `ubuntu`). */
export function shortName(repository: string, project: string): string {
  return repository.startsWith(`${project}/`) ? repository.slice(project.length + 1) : repository;
}

/** The URL of a blob of a repository, by digest (where the acquire step downloads the disk). */
export function blobUrl(registry: URL, repository: string, digest: string): string {
  return new URL(`v2/${repository}/blobs/${digest}`, registry).href;
}

/**
 * One (repository, manifest) → an image-list style event (no type: "register"): the project is
 * the list, the repository (its name inside the project) the image, the tag its version, the disk layer's sha256 its checksum
 * (so its revision changes exactly when the disk does) and its size the expected size.
 */
export function registryImageToEvent(image: RegistryImage): ImageEvent {
  const { annotations, disk } = image.manifest;
  const fields: Record<string, string> = {};
  for (const [annotation, field] of Object.entries(ANNOTATION_FIELDS)) {
    const value = annotations[annotation];
    if (value) fields[field] = value;
  }
  return ImageEventSchema.parse({
    origin: 'registry',
    imageListId: image.listId,
    vo: image.vo,
    imageId: shortName(image.repository, image.project),
    title: fields.title ?? shortName(image.repository, image.project),
    ...fields,
    version: image.tag,
    uri: blobUrl(image.registry, image.repository, disk.digest),
    size: disk.size,
    checksumSha256: disk.digest.slice('sha256:'.length),
    properties: { ...annotationProperties(annotations), [REF_DIGEST]: image.manifest.digest },
    extra: {},
  });
}
