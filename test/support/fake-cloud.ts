import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { ROOT } from './cli.js';

export interface FakeImage {
  id: string;
  name: string;
  location: string;
  /** The uuid of the account that registered it. */
  owner: string;
  is_public: boolean;
  status?: string;
  deleted_at?: string;
  properties: Record<string, string>;
}

export interface FakeState {
  objects: Record<string, unknown>;
  containers: Record<string, unknown>;
  images: FakeImage[];
  invocations: Array<{ tool: string; argv: string[] }>;
}

export const FAKE_KAMAKI = path.join(ROOT, 'test/fakes/kamaki');
const SEED_IMAGE = path.join(ROOT, 'test/fakes/lib/seed-image.js');

/**
 * A Synnefo cloud for end-to-end tests: a ~/.kamakirc naming one cloud, the state file of the
 * fake kamaki and snf-mkimage (test/fakes/), the environment they read, and the `synnefo`
 * configuration block that points the worker at them.
 */
export async function fakeCloud(dir: string, cloud = 'e2e') {
  const kamakirc = path.join(dir, 'kamakirc');
  const stateFile = path.join(dir, 'synnefo-state.json');
  await writeFile(
    kamakirc,
    `[global]\ndefault_cloud = ${cloud}\n\n[cloud "${cloud}"]\nurl = https://accounts.example.org/identity/v2.0\ntoken = not-a-real-token\n`,
  );
  const env = { FAKE_SYNNEFO_STATE: stateFile, FAKE_KAMAKIRC: kamakirc };
  const state = async (): Promise<FakeState> => {
    try {
      return JSON.parse(await readFile(stateFile, 'utf8')) as FakeState;
    } catch {
      return { objects: {}, containers: {}, images: [], invocations: [] };
    }
  };
  return {
    cloud,
    env,
    /** The HOCON `synnefo` section, plus any extra keys (e.g. `prepare = false`). */
    synnefoConf: (extra = '') =>
      `synnefo {\n  kamaki = "${ROOT}/test/fakes/kamaki"\n  snfMkimage = "${ROOT}/test/fakes/snf-mkimage"\n  sudo = []\n  ${extra}\n}\n`,
    state,
    images: async () => (await state()).images,
    /** The uuid of the account this cloud's token belongs to, as `kamaki user info` tells it. */
    account: async (): Promise<string> => {
      const { stdout } = await execa(FAKE_KAMAKI, ['user', 'info', '--output-format', 'json', '--cloud', cloud], {
        env,
      });
      return (JSON.parse(stdout) as { id: string }).id;
    },
    /**
     * Another tenant registers an image on the same cloud (public by default): its properties
     * are whatever that tenant chose, ours included if they like.
     */
    seedForeignImage: async (image: {
      properties: Record<string, string>;
      name?: string;
      isPublic?: boolean;
      owner?: string;
    }): Promise<FakeImage> => {
      const { stdout } = await execa('node', [SEED_IMAGE, JSON.stringify(image)], { env });
      return JSON.parse(stdout) as FakeImage;
    },
  };
}
