import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from './cli.js';

export interface FakeImage {
  id: string;
  name: string;
  location: string;
  is_public: boolean;
  properties: Record<string, string>;
}

export interface FakeState {
  objects: Record<string, unknown>;
  images: FakeImage[];
  invocations: Array<{ tool: string; argv: string[] }>;
}

/**
 * A Synnefo cloud for end-to-end tests: a ~/.kamakirc naming one cloud, the state file of the
 * fake kamaki and snf-mkimage (test/fakes/), the environment they read, and the `synnefo`
 * configuration block that points the worker at them.
 */
export async function fakeCloud(dir: string, cloud = 'e2e') {
  const kamakirc = path.join(dir, 'kamakirc');
  const stateFile = path.join(dir, 'synnefo-state.json');
  await writeFile(kamakirc, `[global]\ndefault_cloud = ${cloud}\n\n[cloud "${cloud}"]\nurl = https://accounts.example.org/identity/v2.0\ntoken = not-a-real-token\n`);
  const state = async (): Promise<FakeState> => {
    try {
      return JSON.parse(await readFile(stateFile, 'utf8')) as FakeState;
    } catch {
      return { objects: {}, images: [], invocations: [] };
    }
  };
  return {
    cloud,
    env: { FAKE_SYNNEFO_STATE: stateFile, FAKE_KAMAKIRC: kamakirc },
    /** The HOCON `synnefo` section, plus any extra keys (e.g. `prepare = false`). */
    synnefoConf: (extra = '') =>
      `synnefo {\n  kamaki = "${ROOT}/test/fakes/kamaki"\n  snfMkimage = "${ROOT}/test/fakes/snf-mkimage"\n  sudo = []\n  ${extra}\n}\n`,
    state,
    images: async () => (await state()).images,
  };
}
