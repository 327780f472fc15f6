/**
 * The kamaki command lines snf-vmcatcher runs (kamaki/cli/cmds/image.py and pithos.py), and
 * the parsing of their JSON output. One place, so the fakes' tests and the activities agree.
 */
import type { Config } from '../core/config.js';
import { ConfigError, ToolError } from '../core/errors.js';
import type { Logger } from '../core/logging.js';
import type { RegistrationOptions } from '../core/workflow-contract.js';
import { runTool } from './tool-runner.js';

/** kamaki's argparse usage errors: the same command line can never succeed. */
const KAMAKI_USAGE_EXIT = [2];

/** An image as `kamaki image list --details --output-format json` shows it (Plankton's /images/detail). */
export interface KamakiImage {
  id: string;
  name: string;
  status?: string;
  location?: string;
  owner?: string;
  is_public: boolean;
  properties: Record<string, string>;
}

export function kamakiCloud(config: Config, options: RegistrationOptions): string {
  const cloud = options.kamakiCloud ?? config.synnefo.cloud;
  if (!cloud) {
    throw new ConfigError('no kamaki cloud: give the -kamaki-cloud option or set synnefo.cloud in the configuration', {
      key: 'synnefo.cloud',
    });
  }
  return cloud;
}

export class Kamaki {
  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly cloud: string,
  ) {}

  private run(args: string[]) {
    return runTool({
      tool: 'kamaki',
      command: this.config.synnefo.kamaki,
      args: [...args, '--cloud', this.cloud],
      timeoutMs: this.config.worker.toolTimeoutMs,
      logger: this.logger,
      permanentExitCodes: KAMAKI_USAGE_EXIT,
    });
  }

  async listImages(): Promise<KamakiImage[]> {
    const { stdout } = await this.run(['image', 'list', '--details', '--output-format', 'json']);
    const parsed = firstJsonValue(stdout, 'kamaki image list');
    if (!Array.isArray(parsed)) throw new ToolError('kamaki image list: expected a JSON list of images', { permanent: false });
    return parsed.map(toKamakiImage);
  }

  /** `-f`: a retry overwrites the object a failed attempt left behind. */
  async upload(localPath: string, container: string, objectName: string): Promise<void> {
    await this.run(['file', 'upload', localPath, `/${container}/${objectName}`, '-f', '--no-progress-bar']);
  }

  async register(input: {
    name: string;
    container: string;
    objectName: string;
    properties: Record<string, string>;
    isPublic: boolean;
  }): Promise<KamakiImage> {
    const args = ['image', 'register', '--name', input.name, '--location', `/${input.container}/${input.objectName}`];
    for (const [key, value] of Object.entries(input.properties)) args.push('-p', `${key}=${value}`);
    if (input.isPublic) args.push('--public');
    // -f: overwrite the <object>.meta a previous attempt may have uploaded.
    args.push('--disk-format', 'diskdump', '--container-format', 'bare', '-f', '--output-format', 'json');
    const { stdout } = await this.run(args);
    return toKamakiImage(firstJsonValue(stdout, 'kamaki image register'));
  }

  async setVisibility(imageId: string, isPublic: boolean): Promise<void> {
    await this.run(['image', 'modify', imageId, isPublic ? '--public' : '--private']);
  }

  async unregister(imageId: string): Promise<void> {
    await this.run(['image', 'unregister', imageId]);
  }
}

/** Plankton answers with `is_public` (list) or `is-public` (register), a boolean or "True"/"False". */
export function toKamakiImage(raw: unknown): KamakiImage {
  if (raw === null || typeof raw !== 'object') throw new ToolError('kamaki: expected a JSON object for an image', { permanent: false });
  const r = raw as Record<string, unknown>;
  if (typeof r.id !== 'string' || !r.id) throw new ToolError('kamaki: image without an id in the output', { permanent: false });
  const flag = r.is_public ?? r['is-public'];
  const properties: Record<string, string> = {};
  if (r.properties && typeof r.properties === 'object') {
    // Property keys are compared upper-case: kamaki upper-cases them, some Plankton versions lower-case them.
    for (const [k, v] of Object.entries(r.properties as Record<string, unknown>)) properties[k.toUpperCase()] = String(v);
  }
  return {
    id: r.id,
    name: String(r.name ?? ''),
    status: r.status === undefined ? undefined : String(r.status),
    location: r.location === undefined ? undefined : String(r.location),
    owner: r.owner === undefined ? undefined : String(r.owner).split(' ')[0],
    is_public: flag === true || String(flag).toLowerCase() === 'true',
    properties,
  };
}

/**
 * The first JSON value in kamaki's output. `image register --output-format json` prints two
 * documents (the image, then the metafile upload), so a plain JSON.parse would fail.
 */
export function firstJsonValue(text: string, what: string): unknown {
  const start = text.search(/[[{]/);
  if (start < 0) throw new ToolError(`${what}: no JSON in the output`, { permanent: false });
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      depth--;
      if (depth === 0) {
        try {
          return JSON.parse(text.slice(start, i + 1));
        } catch (err) {
          throw new ToolError(`${what}: output is not valid JSON: ${(err as Error).message}`, { permanent: false });
        }
      }
    }
  }
  throw new ToolError(`${what}: truncated JSON in the output`, { permanent: false });
}

/** Images carrying every property of the filter (keys compared upper-case), not deleted. */
export function imagesMatching(images: KamakiImage[], filter: Record<string, string>): KamakiImage[] {
  return images.filter(
    (img) =>
      (img.status ?? '').toUpperCase() !== 'DELETED' &&
      Object.entries(filter).every(([k, v]) => img.properties[k.toUpperCase()] === v),
  );
}
