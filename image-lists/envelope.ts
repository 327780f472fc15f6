import { InvalidInputError } from '../core/errors.js';

/**
 * The envelope of an image list: plain JSON, or an S/MIME `multipart/signed` message whose
 * first part is the JSON and second part the PKCS#7 signature. Only the MIME structure is
 * parsed here; the signature itself is checked by openssl (signature.ts).
 */
type ImageListEnvelope =
  { kind: 'plain'; json: string } | { kind: 'smime'; json: string; micalg?: string; boundary: string };

interface MimeHeaders {
  /** Lower-cased header name → unfolded value (the last one wins). */
  [name: string]: string;
}

/** Splits header lines from the body at the first empty line; unfolds continuation lines. */
function splitHeaders(text: string): { headers: MimeHeaders; body: string } {
  const lines = text.split(/\r?\n/);
  const headers: MimeHeaders = {};
  let last: string | undefined;
  let i = 0;
  for (; i < lines.length; i++) {
    const line = lines[i];
    if (line === '') {
      i++;
      break;
    }
    if (/^[ \t]/.test(line) && last) {
      headers[last] += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new InvalidInputError(`image list: malformed MIME header line '${line.slice(0, 80)}'`);
    last = line.slice(0, colon).trim().toLowerCase();
    headers[last] = line.slice(colon + 1).trim();
  }
  // Keep the body's own line endings: the signature covers the bytes as sent.
  const offset = nthLineOffset(text, i);
  return { headers, body: text.slice(offset) };
}

function nthLineOffset(text: string, n: number): number {
  let offset = 0;
  for (let k = 0; k < n; k++) {
    const next = text.indexOf('\n', offset);
    if (next < 0) return text.length;
    offset = next + 1;
  }
  return offset;
}

/** `multipart/signed; protocol="…"; boundary=…` → type and lower-cased parameter names. */
export function parseContentType(value: string): { type: string; params: Record<string, string> } {
  const [type, ...rest] = splitParams(value);
  const params: Record<string, string> = {};
  for (const part of rest) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    let v = part.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    params[part.slice(0, eq).trim().toLowerCase()] = v;
  }
  return { type: type.trim().toLowerCase(), params };
}

/** Splits on `;` outside double quotes. */
function splitParams(value: string): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\' && quoted && i + 1 < value.length) {
      current += c + value[++i];
    } else if (c === '"') {
      quoted = !quoted;
      current += c;
    } else if (c === ';' && !quoted) {
      parts.push(current);
      current = '';
    } else current += c;
  }
  parts.push(current);
  return parts;
}

/** The body parts between `--boundary` delimiter lines (preamble and epilogue dropped). */
function splitMultipart(body: string, boundary: string): string[] {
  const delimiter = `--${boundary}`;
  const lines = body.split(/(?<=\n)/); // keeps each line's own ending
  const parts: string[] = [];
  let current: string[] | undefined;
  for (const line of lines) {
    const bare = line.replace(/\r?\n$/, '').replace(/[ \t]+$/, '');
    if (bare === delimiter || bare === `${delimiter}--`) {
      if (current) parts.push(stripFinalLineBreak(current.join('')));
      if (bare.endsWith('--') && bare !== delimiter) return parts;
      current = [];
    } else if (current) current.push(line);
  }
  throw new InvalidInputError(`image list: S/MIME message ends before its closing boundary '${delimiter}--'`);
}

/** The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1). */
function stripFinalLineBreak(text: string): string {
  return text.replace(/\r?\n$/, '');
}

/** A MIME part may start with its own headers (Content-Type: application/json, …). */
function partContent(part: string): string {
  if (/^[A-Za-z][A-Za-z0-9-]*:/.test(part)) return splitHeaders(part).body;
  return part;
}

/** Recognises the envelope and extracts the JSON text. */
export function openEnvelope(raw: Buffer | string): ImageListEnvelope {
  let text = typeof raw === 'string' ? raw : raw.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const start = text.trimStart();
  if (start.startsWith('{')) return { kind: 'plain', json: text };
  if (!/^[A-Za-z][A-Za-z0-9-]*:/.test(start)) {
    throw new InvalidInputError('image list is neither JSON nor an S/MIME message');
  }
  const { headers, body } = splitHeaders(start);
  const contentType = headers['content-type'];
  if (!contentType) throw new InvalidInputError('image list: MIME message without a Content-Type header');
  const { type, params } = parseContentType(contentType);
  if (type !== 'multipart/signed') {
    throw new InvalidInputError(
      `image list: unsupported MIME type ${type} (expected multipart/signed S/MIME or plain JSON)`,
    );
  }
  const boundary = params.boundary;
  if (!boundary) throw new InvalidInputError('image list: multipart/signed without a boundary parameter');
  const parts = splitMultipart(body, boundary);
  if (parts.length < 2)
    throw new InvalidInputError(
      `image list: multipart/signed needs 2 parts (content and signature), found ${parts.length}`,
    );
  return { kind: 'smime', json: partContent(parts[0]), micalg: params.micalg, boundary };
}

/** The content openssl returns after verification may still carry the part's own headers. */
export function signedContentText(verified: Buffer | string): string {
  const text = typeof verified === 'string' ? verified : verified.toString('utf8');
  return partContent(text);
}
