/**
 * `npm run bench [-- name...]`: runs the benchmarks (all, or the named ones: download, bridge,
 * e2e, detect, convert, real-size, pipeline, subscriptions, clouds), each against its reference in the same run on the same
 * data, and
 * writes the medians, ratios and targets to bench/results.md and bench/results.json. A
 * benchmark not run this time keeps its previous figures in the files; every run is kept in the
 * history. `--render` only rewrites results.md from results.json.
 * Never part of `npm test`.
 */
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { benchBridge } from './bridge-ingest.js';
import { benchClouds } from './clouds.js';
import { benchConvert } from './convert.js';
import { benchDetect } from './detect.js';
import { benchDownload } from './download.js';
import { benchE2e } from './e2e.js';
import { benchPipeline } from './pipeline.js';
import { benchRealSize } from './real-size.js';
import { benchSubscriptions } from './subscriptions.js';
import { BENCH_TMP, GiB, ROOT, cleanTmp, freeBytes, log, round, type BenchResult } from './lib.js';

const BENCHES: Record<string, () => Promise<BenchResult>> = {
  download: benchDownload,
  bridge: benchBridge,
  e2e: benchE2e,
  detect: benchDetect,
  convert: benchConvert,
  'real-size': benchRealSize,
  pipeline: benchPipeline,
  subscriptions: benchSubscriptions,
  clouds: benchClouds,
};

const RESULTS_JSON = path.join(ROOT, 'bench/results.json');
const RESULTS_MD = path.join(ROOT, 'bench/results.md');

/** One run of a benchmark as kept in its history: every run's figures stay, not only the last. */
interface PastRun {
  ranAt: string;
  /** The CPU it ran on (the machine line above names only the last run's). */
  cpu?: string;
  targets: BenchResult['targets'];
  rows?: BenchResult['rows'];
  /** Every repeat's figures (results.json only). */
  raw?: BenchResult['raw'];
  notes?: string[];
  skipped?: string;
}

interface ResultsFile {
  machine: Record<string, string | number>;
  results: Record<string, BenchResult & { ranAt: string }>;
  /** Every run since the history was started, oldest first, per benchmark. */
  history?: Record<string, PastRun[]>;
}

async function machine(): Promise<Record<string, string | number>> {
  const tool = async (cmd: string, args: string[]) => (await execa(cmd, args, { reject: false })).stdout.split('\n')[0];
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: round(os.totalmem() / GiB, 1),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    qemuImg: await tool('qemu-img', ['--version']),
    curl: await tool('curl', ['--version']),
  };
}

/** A table cell: a `|` inside (as in `curl | tee`) would split the cell. */
const cell = (value: string | number): string => String(value).replace(/\|/g, '\\|');

function table(rows: BenchResult['rows']): string {
  if (!rows.length) return '';
  const keys = Object.keys(rows[0]);
  const line = (cells: Array<string | number>) => `| ${cells.map(cell).join(' | ')} |`;
  return [line(keys), line(keys.map(() => '---')), ...rows.map((r) => line(keys.map((k) => r[k] ?? '')))].join('\n');
}

function markdown(file: ResultsFile): string {
  const m = file.machine;
  const out = [
    '# Benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts); see docs/benchmarks.md for what each benchmark measures and how to run it.',
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, ${m.os}, Node ${m.node}, ${m.qemuImg}, ${String(m.curl).split(' ').slice(0, 2).join(' ')}.`,
    '',
    '## Targets',
    '',
    '| benchmark | target | measured | met |',
    '| --- | --- | --- | --- |',
  ];
  for (const name of Object.keys(BENCHES)) {
    const r = file.results[name];
    if (!r) {
      out.push(`| ${name} | | not run yet | |`);
      continue;
    }
    if (r.skipped) {
      out.push(`| ${name} | | not measured: ${cell(r.skipped)} | |`);
      continue;
    }
    for (const t of r.targets)
      out.push(
        `| ${name} | ${cell(t.target)} | ${cell(t.measured)} | ${t.met ? 'yes' : `**no**${t.note ? `: ${cell(t.note)}` : ''}`} |`,
      );
  }
  for (const name of Object.keys(BENCHES)) {
    const r = file.results[name];
    if (!r) continue;
    out.push('', `## ${r.title}`, '', `Run ${r.ranAt}.`, '', r.method, '');
    if (r.skipped) {
      out.push(`Not measured: ${r.skipped}`);
      continue;
    }
    if (r.rows.length) out.push(table(r.rows));
    if (r.notes?.length) out.push('', ...r.notes.map((n) => `- ${n}`));
    for (const section of r.sections ?? []) {
      out.push('', `### ${section.title}`, '', section.method, '', table(section.rows));
      if (section.notes?.length) out.push('', ...section.notes.map((n) => `- ${n}`));
    }
    const past = file.history?.[name] ?? [];
    if (past.length > 1) {
      out.push('', `Every run of this benchmark (${past.length}, oldest first):`, '');
      for (const p of past) {
        const figures = p.skipped
          ? `not measured: ${p.skipped}`
          : p.targets.map((t) => `${t.target}: ${t.measured} (${t.met ? 'met' : 'not met'})`).join('; ');
        const table = (p.rows ?? [])
          .map((row) =>
            Object.values(row)
              .filter((v) => v !== '')
              .join(' '),
          )
          .join('; ');
        out.push(
          `- ${p.ranAt}${p.cpu ? ` (${p.cpu})` : ''}: ${figures}.${table ? ` Figures: ${table}.` : ''}${p.notes?.length ? ` ${p.notes.join(' ')}` : ''}`,
        );
      }
    }
  }
  return `${out.join('\n')}\n`;
}

async function main(): Promise<void> {
  if (process.argv.includes('--render')) {
    // Only rewrite results.md from results.json (after editing a note by hand, or a change of layout).
    await writeFile(RESULTS_MD, markdown(JSON.parse(await readFile(RESULTS_JSON, 'utf8')) as ResultsFile));
    return;
  }
  const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  for (const name of wanted)
    if (!BENCHES[name]) throw new Error(`unknown benchmark '${name}' (known: ${Object.keys(BENCHES).join(', ')})`);
  const names = wanted.length ? wanted : Object.keys(BENCHES);
  const previous: ResultsFile = await readFile(RESULTS_JSON, 'utf8')
    .then((t) => JSON.parse(t) as ResultsFile)
    .catch(() => ({ machine: {}, results: {} }));
  const file: ResultsFile = { machine: await machine(), results: previous.results, history: previous.history ?? {} };
  // Results from before the history was kept are its first entries.
  for (const [name, r] of Object.entries(file.results))
    file.history![name] ??= [
      { ranAt: r.ranAt, targets: r.targets, rows: r.rows, raw: r.raw, notes: r.notes, skipped: r.skipped },
    ];
  const remember = (name: string) => {
    const r = file.results[name];
    const history = (file.history ??= {});
    (history[name] ??= []).push({
      ranAt: r.ranAt,
      cpu: `${file.machine.cpus} × ${file.machine.cpuModel}`,
      targets: r.targets,
      rows: r.rows,
      raw: r.raw,
      notes: r.notes,
      skipped: r.skipped,
    });
  };
  log(`temporary files under ${BENCH_TMP} (${round((await freeBytes(ROOT).catch(() => NaN)) / GiB, 1)} GiB free)`);
  let failed = false;
  try {
    for (const name of names) {
      log(`--- ${name}`);
      try {
        file.results[name] = { ...(await BENCHES[name]()), ranAt: new Date().toISOString() };
      } catch (err) {
        failed = true;
        log(`${name} failed: ${(err as Error).stack ?? String(err)}`);
        file.results[name] = {
          name,
          title: name,
          method: '',
          rows: [],
          targets: [],
          raw: {},
          skipped: `the benchmark failed on this run: ${(err as Error).message.split('\n')[0]}`,
          ranAt: new Date().toISOString(),
        };
      }
      remember(name);
      await writeFile(RESULTS_JSON, `${JSON.stringify(file, null, 2)}\n`);
      await writeFile(RESULTS_MD, markdown(file));
    }
  } finally {
    await cleanTmp();
  }
  log(`results: ${path.relative(process.cwd(), RESULTS_MD)}, ${path.relative(process.cwd(), RESULTS_JSON)}`);
  if (failed) process.exitCode = 1;
}

await main();
