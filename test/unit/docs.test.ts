/**
 * The docs say what the code does: every configuration key that core/config.ts accepts has a row
 * in the operator's guide (docs/operations.md, "Every key"), and every relative link in the
 * README and docs/ leads to a file (and heading) that exists.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { ConfigSchema, RegistrySubscriptionSchema, SubscriptionSchema } from '../../core/config.js';
import { ROOT } from '../support/cli.js';

type Schema = z.ZodType & { def: Record<string, unknown> & { type: string } };

/** The schemas behind a key the walk cannot see through (a transform choosing between schemas). */
const OPAQUE: Record<string, Schema[]> = {
  subscriptions: [SubscriptionSchema as unknown as Schema, RegistrySubscriptionSchema as unknown as Schema],
};

/** Every leaf key of a zod schema, dotted (`worker.metricsPort`), arrays of objects as `[]` (`subscriptions[].url`). */
function keysOf(schema: Schema, prefix: string, out: Set<string>): void {
  const def = schema.def;
  switch (def.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
      return keysOf(def.innerType as Schema, prefix, out);
    case 'pipe': {
      const opaque = OPAQUE[prefix.replace(/\[\]$/, '')];
      if (opaque) return opaque.forEach((s) => keysOf(s, prefix, out));
      const input = def.in as Schema;
      return keysOf(input.def.type === 'unknown' ? (def.out as Schema) : input, prefix, out);
    }
    case 'array': {
      const element = def.element as Schema;
      const opaque = OPAQUE[prefix];
      if (opaque) return opaque.forEach((s) => keysOf(s, `${prefix}[]`, out));
      if (unwrap(element).def.type === 'object') return keysOf(element, `${prefix}[]`, out);
      out.add(prefix);
      return;
    }
    case 'object': {
      for (const [key, value] of Object.entries(def.shape as Record<string, Schema>))
        keysOf(value, prefix ? `${prefix}.${key}` : key, out);
      return;
    }
    case 'union': {
      for (const option of def.options as Schema[])
        if (unwrap(option).def.type === 'object') keysOf(option, prefix, out);
      if (!(def.options as Schema[]).some((o) => unwrap(o).def.type === 'object')) out.add(prefix);
      return;
    }
    default:
      out.add(prefix);
  }
}

function unwrap(schema: Schema): Schema {
  const def = schema.def;
  if (['optional', 'nullable', 'default', 'prefault', 'readonly'].includes(def.type))
    return unwrap(def.innerType as Schema);
  if (def.type === 'pipe') {
    const input = def.in as Schema;
    return unwrap(input.def.type === 'unknown' ? (def.out as Schema) : input);
  }
  return schema;
}

/** The rows of docs/operations.md's "Every key" table, by each key named in backticks in their first cell. */
function documentedRows(): Map<string, string> {
  const text = readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');
  const start = text.indexOf('### 6.1 Every key');
  const end = text.indexOf('\n### ', start + 1);
  const rows = new Map<string, string>();
  for (const line of text.slice(start, end).split('\n')) {
    if (!line.startsWith('| `')) continue;
    const first = line.split('|')[1]!;
    for (const match of first.matchAll(/`([^`]+)`/g)) rows.set(match[1]!, line);
  }
  return rows;
}

/**
 * A key is documented by a row of its own, or by the row of the list or object it is part of
 * when that row names it (`security.endorsers`' row saying `{ dn = "…", ca = "…" }` documents
 * `security.endorsers[].dn`).
 */
function isDocumented(key: string, rows: Map<string, string>): boolean {
  if (rows.has(key)) return true;
  const leaf = /[^.[\]]+$/.exec(key)![0];
  for (let parent = key; /[.[]/.test(parent);) {
    parent = parent.replace(/(\[\]|\.[^.[\]]+)$/, '');
    const row = rows.get(parent);
    if (row) return new RegExp(`\\b${leaf}\\b`).test(row);
  }
  return false;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchorsOf(file: string): Set<string> {
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const match = !fenced && /^#{1,6}\s+(.*)$/.exec(line);
    if (!match) continue;
    let anchor = slug(match[1]);
    for (let n = 1; anchors.has(anchor); n++) anchor = `${slug(match[1])}-${n}`;
    anchors.add(anchor);
  }
  return anchors;
}

const DOCS = [
  'README.md',
  ...readdirSync(path.join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

describe('the docs say what the code does', () => {
  test('every configuration key of core/config.ts has a row in docs/operations.md "Every key"', () => {
    const keys = new Set<string>();
    keysOf(ConfigSchema as unknown as Schema, '', keys);
    expect(keys.size).toBeGreaterThan(50);
    const rows = documentedRows();
    const missing = [...keys].filter((key) => !isDocumented(key, rows)).sort();
    expect(missing).toEqual([]);
  });

  test.each(DOCS)('every relative link of %s resolves', (doc) => {
    const file = path.join(ROOT, doc);
    const broken: string[] = [];
    let fenced = false;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line.startsWith('```')) fenced = !fenced;
      if (fenced) continue;
      for (const match of line.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = match[1];
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
        const [where, anchor] = target.split('#');
        const linked = where ? path.resolve(path.dirname(file), where) : file;
        if (!existsSync(linked)) broken.push(`${target} (no such file)`);
        else if (anchor && linked.endsWith('.md') && !anchorsOf(linked).has(anchor))
          broken.push(`${target} (no heading #${anchor})`);
      }
    }
    expect(broken).toEqual([]);
  });
});
