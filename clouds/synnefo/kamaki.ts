/**
 * The kamaki command lines snf-vmcatcher runs (kamaki 0.13 to 0.17, kamaki/cli/cmds/image.py,
 * pithos.py and astakos.py), and the checks of their output. One place, so the fakes' tests and
 * the activities agree.
 */
import type { Config } from '../../core/config.js';
import { ConfigError, ToolError } from '../../core/errors.js';
import type { Logger } from '../../core/logging.js';
import { chosenCloud, type RegistrationOptions } from '../../core/workflow-contract.js';
import { runTool, type ToolResult } from '../../runtime/tool-runner.js';
import { printable } from '../identity.js';
import { PROPERTY_KEY_PATTERN } from './image-properties.js';

/**
 * kamaki 0.13+ never exits 2: an error exits 1, and an option or argument its command's main()
 * cannot take prints "Syntax error" and the usage on stdout and exits 0 (so does an unknown
 * command: its group's help, exit 0). A zero exit proves nothing until the output says so.
 */
// eslint-disable-next-line no-control-regex -- kamaki may colour "Syntax error" (ESC [ … m)
const SYNTAX_ERROR = /^(?:\x1b\[[0-9;]*m)*(?:Syntax error\b|usage: )/im;
/** `container create` on an existing container (kamaki's own spelling, and the obvious one). */
const CONTAINER_EXISTS = /Container \S+ alread(?:y)? exists/;
const UPLOAD_COMPLETED = /^Upload completed\s*$/m;

/** An image as `kamaki image list --details --output-format json` shows it (Plankton's /images/detail). */
export interface KamakiImage {
  id: string;
  name: string;
  status?: string;
  location?: string;
  /** The owner's user uuid (kamaki adds " (username)" in some outputs; that part is dropped). */
  owner?: string;
  is_public: boolean;
  properties: Record<string, string>;
}

export function kamakiCloud(config: Config, options: RegistrationOptions): string {
  const cloud = chosenCloud(options) ?? config.synnefo.cloud;
  if (!cloud) {
    throw new ConfigError('no kamaki cloud: give the -kamaki-cloud option or set synnefo.cloud in the configuration', {
      key: 'synnefo.cloud',
    });
  }
  return cloud;
}

/**
 * The account uuid of each (kamaki program, cloud), asked once per worker process: the token of
 * a cloud does not change under a running worker (restart it after changing ~/.kamakirc).
 * A failed look-up is not kept, so the next attempt asks again.
 */
const accountIds = new Map<string, Promise<string>>();

/** Forgets the cached account uuids (tests that switch kamaki configurations in one process). */
export function forgetKamakiAccounts(): void {
  accountIds.clear();
}

export class Kamaki {
  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly cloud: string,
  ) {}

  /** Runs one kamaki command and refuses a "successful" run that printed a syntax error. */
  private async run(args: string[], what: string): Promise<ToolResult> {
    const result = await runTool({
      tool: 'kamaki',
      command: this.config.synnefo.kamaki,
      args: [...args, '--cloud', this.cloud],
      timeoutMs: this.config.worker.toolTimeoutMs,
      logger: this.logger,
    });
    if (SYNTAX_ERROR.test(result.stdout)) {
      const first = result.stdout
        .split('\n')
        .filter((l) => l.trim())
        .slice(0, 2)
        .join(' | ')
        .slice(0, 300);
      throw new ToolError(
        `kamaki ${what} refused its command line (exit status 0, but it printed: ${first}); snf-vmcatcher needs kamaki 0.13 or newer`,
        {
          permanent: true,
        },
      );
    }
    return result;
  }

  /**
   * The uuid of the account the cloud's token belongs to (`kamaki user info`): the owner of
   * every image and object this worker creates, and the only owner whose images count as ours.
   */
  accountId(): Promise<string> {
    const key = `${this.config.synnefo.kamaki}\u0000${this.cloud}`;
    let id = accountIds.get(key);
    if (!id) {
      id = this.askAccountId();
      accountIds.set(key, id);
      const pending = id;
      pending.catch(() => {
        if (accountIds.get(key) === pending) accountIds.delete(key);
      });
    }
    return id;
  }

  private async askAccountId(): Promise<string> {
    const { stdout } = await this.run(['user', 'info', '--output-format', 'json'], 'user info');
    const user = firstJsonValue(stdout, 'kamaki user info') as { id?: unknown } | null;
    if (!user || typeof user !== 'object' || typeof user.id !== 'string' || !user.id.trim()) {
      throw new ToolError('kamaki user info: no user id ("id") in the output', { permanent: false });
    }
    this.logger.info({ cloud: this.cloud, account: user.id }, 'kamaki account of this cloud');
    return user.id.trim();
  }

  /** Every image the account can see: its own, and other accounts' public or shared ones. */
  async listImages(): Promise<KamakiImage[]> {
    const { stdout } = await this.run(['image', 'list', '--details', '--output-format', 'json'], 'image list');
    const parsed = firstJsonValue(stdout, 'kamaki image list');
    if (!Array.isArray(parsed))
      throw new ToolError('kamaki image list: expected a JSON list of images', { permanent: false });
    return parsed.map(toKamakiImage);
  }

  /** The images this account owns; other tenants' images never count as ours. */
  async listOwnImages(): Promise<{ own: KamakiImage[]; others: KamakiImage[] }> {
    // Both asked at once, and both waited for even when one fails: no kamaki of this step is
    // still running (and writing its files) once the step has failed.
    const [asked, listed] = await Promise.allSettled([this.accountId(), this.listImages()]);
    if (asked.status === 'rejected') throw asked.reason;
    if (listed.status === 'rejected') throw listed.reason;
    const own: KamakiImage[] = [];
    const others: KamakiImage[] = [];
    for (const img of listed.value) (img.owner === asked.value ? own : others).push(img);
    return { own, others };
  }

  async imageInfo(imageId: string): Promise<KamakiImage> {
    const { stdout } = await this.run(['image', 'info', imageId, '--output-format', 'json'], 'image info');
    return toKamakiImage(firstJsonValue(stdout, 'kamaki image info'));
  }

  /**
   * Creates the container unless it exists: `file upload` does not create it. Two workers may
   * race here; "already exists" is success.
   */
  async ensureContainer(container: string): Promise<void> {
    try {
      await this.run(['container', 'create', container], 'container create');
      this.logger.info({ container }, 'created the Pithos+ container');
    } catch (err) {
      if (err instanceof ToolError && err.exitCode === 1 && CONTAINER_EXISTS.test(err.message)) return;
      throw err;
    }
  }

  /** `-f`: a retry overwrites the object a failed attempt left behind. */
  async upload(localPath: string, container: string, objectName: string): Promise<void> {
    const { stderr } = await this.run(
      ['file', 'upload', localPath, `/${container}/${objectName}`, '-f', '--no-progress-bar'],
      'file upload',
    );
    if (!UPLOAD_COMPLETED.test(stderr)) {
      throw new ToolError(`kamaki file upload of ${objectName} exited 0 without saying "Upload completed"`, {
        permanent: false,
      });
    }
  }

  async register(input: {
    name: string;
    container: string;
    objectName: string;
    properties: Record<string, string>;
    isPublic: boolean;
  }): Promise<KamakiImage> {
    // The last gate before the tool: one line per argument, whatever the caller built.
    const args = [
      'image',
      'register',
      '--name',
      printable(input.name),
      '--location',
      `/${input.container}/${input.objectName}`,
    ];
    for (const [key, value] of Object.entries(input.properties)) {
      if (!PROPERTY_KEY_PATTERN.test(key))
        throw new ToolError(`property key '${printable(key)}' is not one Synnefo takes ([A-Za-z0-9_]+)`, {
          permanent: true,
        });
      args.push('-p', `${key}=${printable(value)}`);
    }
    if (input.isPublic) args.push('--public');
    // -f: overwrite the <object>.meta a previous attempt may have uploaded.
    args.push('--disk-format', 'diskdump', '--container-format', 'bare', '-f', '--output-format', 'json');
    const { stdout } = await this.run(args, 'image register');
    return toKamakiImage(firstJsonValue(stdout, 'kamaki image register'));
  }

  /** `image modify` prints nothing: the visibility is read back to confirm it. */
  async setVisibility(imageId: string, isPublic: boolean): Promise<void> {
    await this.run(['image', 'modify', imageId, isPublic ? '--public' : '--private'], 'image modify');
    const after = await this.imageInfo(imageId);
    if (after.is_public !== isPublic) {
      throw new ToolError(
        `kamaki image modify ${imageId} exited 0 but the image is still ${after.is_public ? 'public' : 'private'}`,
        {
          permanent: false,
        },
      );
    }
  }

  async unregister(imageId: string): Promise<void> {
    await this.run(['image', 'unregister', imageId], 'image unregister');
  }
}

/** Plankton answers with `is_public` (list) or `is-public` (register), a boolean or "True"/"False". */
function toKamakiImage(raw: unknown): KamakiImage {
  if (raw === null || typeof raw !== 'object')
    throw new ToolError('kamaki: expected a JSON object for an image', { permanent: false });
  const r = raw as Record<string, unknown>;
  if (typeof r.id !== 'string' || !r.id)
    throw new ToolError('kamaki: image without an id in the output', { permanent: false });
  const flag = r.is_public ?? r['is-public'];
  const properties: Record<string, string> = {};
  if (r.properties && typeof r.properties === 'object') {
    // Property keys are compared upper-case: kamaki upper-cases them, some Plankton versions lower-case them.
    for (const [k, v] of Object.entries(r.properties as Record<string, unknown>))
      properties[k.toUpperCase()] = String(v);
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
function firstJsonValue(text: string, what: string): unknown {
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

/** Images carrying every property of the filter (keys compared upper-case, values exactly), not deleted. */
export function imagesMatching(images: KamakiImage[], filter: Record<string, string>): KamakiImage[] {
  return images.filter(
    (img) =>
      (img.status ?? '').toUpperCase() !== 'DELETED' &&
      Object.entries(filter).every(([k, v]) => img.properties[k.toUpperCase()] === v),
  );
}
