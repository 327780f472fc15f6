// Bundles the compiled CLI (dist/cli/main.js and every command module it loads) into dist/bundle/
// with esbuild: one chunk per lazily loaded command, our modules and most dependencies inlined.
// A command then starts without resolving, reading and linking hundreds of small files; the
// vmcatcher hook runs one per event. `npm run build` runs this after tsc.
//
// The Temporal SDK stays in node_modules, loaded by its own name: the worker and the activities
// must share one copy of @temporalio/activity (its context lives in one AsyncLocalStorage) and of
// @temporalio/common (failure classes), and the workflow bundle is built from dist/workflows/.
import { build } from 'esbuild';
import { rm } from 'node:fs/promises';

const outdir = 'dist/bundle';
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: { main: 'dist/cli/main.js' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['@temporalio/*'],
  // CommonJS dependencies inlined in an ES module still call require() for Node's own modules.
  banner: {
    js: "import { createRequire as __snfRequire } from 'node:module'; const require = __snfRequire(import.meta.url);",
  },
  sourcemap: 'linked',
  logLevel: 'warning',
});
