import { readFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { ToolError } from '../../core/errors.js';
import { whileHeartbeating } from '../../runtime/heartbeats.js';
import { runTool } from '../../runtime/tool-runner.js';
import type { ActivityDeps } from '../../runtime/deps.js';
import { imageObjectName } from '../identity.js';
import type { PrepareInput, PreparedImage } from '../target.js';

/** snf-mkimage's argparse usage errors (bad option, missing input): never worth a retry. */
const SNF_MKIMAGE_USAGE_EXIT = [2];

/**
 * Runs snf-mkimage (sysprep, shrink, metadata detection) on the raw image, writing the
 * prepared image and its `.meta` into the work folder, and returns the detected metadata.
 * With `synnefo.prepare` off, the raw image is registered as it is.
 */
export async function prepareImage({ config, logger }: ActivityDeps, input: PrepareInput): Promise<PreparedImage> {
  if (!config.synnefo.prepare) {
    logger.info({ path: input.rawPath }, 'synnefo.prepare is off: registering the raw image without snf-mkimage');
    return { path: input.rawPath, metadata: {}, prepared: false };
  }
  await mkdir(input.workDir, { recursive: true });
  const outfile = path.join(input.workDir, `${imageObjectName(input.event)}.diskdump`);
  const [program, ...prefix] = [...config.synnefo.sudo, config.synnefo.snfMkimage];
  // Only for the heartbeat details: a missing file is the tool's error to report.
  const bytesTotal = await stat(input.rawPath).then(
    (st) => st.size,
    () => undefined,
  );
  const started = Date.now();
  // Details name the step, so the Web UI tells a long snf-mkimage run from a hung one.
  await whileHeartbeating(
    () => ({ step: 'snf-mkimage', tool: 'snf-mkimage', bytesTotal, elapsedMs: Date.now() - started }),
    () =>
      runTool({
        tool: 'snf-mkimage',
        command: program,
        // --force: a retry finds the outputs of the failed attempt; --tmpdir keeps snf-mkimage's
        // large temporary files on the worker's disk rather than in /tmp.
        args: [
          ...prefix,
          '-o',
          outfile,
          '--force',
          '--tmpdir',
          input.workDir,
          ...(config.synnefo.allowUnsupported ? ['--allow-unsupported'] : []),
          input.rawPath,
        ],
        timeoutMs: config.worker.toolTimeoutMs,
        logger,
        permanentExitCodes: SNF_MKIMAGE_USAGE_EXIT,
      }),
  );
  return { path: outfile, metadata: await readMetaFile(`${outfile}.meta`), prepared: true };
}

/** `{"properties": {...}, "disk-format": "diskdump"}` as snf-mkimage writes it. */
async function readMetaFile(file: string): Promise<Record<string, string>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new ToolError(`snf-mkimage left no readable metadata file ${file}: ${(err as Error).message}`, {
      permanent: false,
    });
  }
  const properties = (parsed as { properties?: unknown } | null)?.properties;
  if (!properties || typeof properties !== 'object' || Array.isArray(properties)) {
    throw new ToolError(`snf-mkimage metadata file ${file} has no "properties" object`, { permanent: false });
  }
  return Object.fromEntries(Object.entries(properties as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
}
