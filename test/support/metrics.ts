/** Reading Prometheus endpoints and the metric names the packaged dashboard and alert rules use. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { ROOT } from './cli.js';

export const DASHBOARD = path.join(ROOT, 'packaging/grafana/snf-vmcatcher-dashboard.json');
export const ALERT_RULES = path.join(ROOT, 'packaging/prometheus/snf-vmcatcher-rules.yml');

/** One scrape: every sample line, `name{labels}` → value; `declared`, every metric its `# TYPE` lines name. */
export type Samples = Map<string, number> & { declared: Set<string> };

export async function scrape(port: number): Promise<Samples> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`GET :${port}/metrics answered ${res.status}`);
  const samples = Object.assign(new Map<string, number>(), { declared: new Set<string>() });
  for (const line of (await res.text()).split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      const suffixes = type[2] === 'histogram' ? ['_bucket', '_sum', '_count'] : [''];
      for (const suffix of suffixes) samples.declared.add(`${type[1]}${suffix}`);
    }
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels` (0 when none). */
export function valueOf(samples: Samples, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [series, value] of samples) {
    const brace = series.indexOf('{');
    if ((brace < 0 ? series : series.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) sum += value;
  }
  return sum;
}

/**
 * The metric names a scrape exports: those with samples, and those declared by a `# TYPE` line
 * (a labelled counter nothing has counted yet has no sample), histograms by their `_bucket`,
 * `_sum`, `_count` series.
 */
export function namesIn(samples: Samples): Set<string> {
  return new Set([
    ...[...samples.keys()].map((s) => (s.includes('{') ? s.slice(0, s.indexOf('{')) : s)),
    ...samples.declared,
  ]);
}

/** PromQL functions, keywords and label names that look like metric names in an expression. */
const NOT_METRICS = new Set([
  'sum',
  'max',
  'min',
  'avg',
  'count',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'rate',
  'increase',
  'irate',
  'time',
  'histogram_quantile',
  'absent',
  'offset',
  'humanize',
  'humanizeDuration',
  'le',
  'inf',
]);

/** The metric names a PromQL expression reads: identifiers outside braces, strings and ranges. */
export function metricNamesOf(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\bby\s*\([^)]*\)/g, '')
    .replace(/\b(on|ignoring|without)\s*\([^)]*\)/g, '');
  const names = bare.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return names.filter((n) => !NOT_METRICS.has(n) && !/^\d/.test(n));
}

export interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  templating: { list: Array<{ name: string; type: string; query?: string }> };
  panels: Array<{
    id: number;
    type: string;
    title: string;
    gridPos: { h: number; w: number; x: number; y: number };
    datasource?: { type: string; uid: string };
    targets?: Array<{ refId: string; expr: string; datasource?: { type: string; uid: string } }>;
  }>;
}

export interface AlertRules {
  groups: Array<{
    name: string;
    rules: Array<{
      alert: string;
      expr: string;
      for?: string;
      labels?: Record<string, string>;
      annotations?: Record<string, string>;
    }>;
  }>;
}

export async function loadDashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

export async function loadAlertRules(): Promise<AlertRules> {
  return parse(await readFile(ALERT_RULES, 'utf8')) as AlertRules;
}

/** Every PromQL expression of the dashboard and the alert rules, with where it is. */
export async function packagedExpressions(): Promise<Array<{ where: string; expr: string }>> {
  const dashboard = await loadDashboard();
  const rules = await loadAlertRules();
  return [
    ...dashboard.panels.flatMap((p) =>
      (p.targets ?? []).map((t) => ({ where: `dashboard panel "${p.title}" ${t.refId}`, expr: t.expr })),
    ),
    ...rules.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr }))),
  ];
}
