import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { SignaturePolicy } from '../config.js';
import { SignatureError } from '../errors.js';

/**
 * S/MIME verification with the `openssl` command (no PKCS#7 parsing of our own), endorser
 * pinning, and the signature policy that decides what to do with the outcome.
 */

export interface SignerIdentity {
  /** Subject DN in the slash form image lists use (`/C=…/O=…/CN=…`). */
  subject: string;
  issuer: string;
}

export type VerificationResult =
  | { verified: true; signer: SignerIdentity; content: Buffer }
  | { verified: false; reason: string };

export interface VerifyOptions {
  /** A CA file (PEM bundle) or a hashed CA directory (like /etc/grid-security/certificates). */
  caPath: string;
  timeoutMs?: number;
  openssl?: string;
}

/** Runs `openssl smime -verify` on the whole S/MIME message; never throws for a bad signature. */
export async function verifySmime(message: Buffer, opts: VerifyOptions): Promise<VerificationResult> {
  let caArgs: string[];
  try {
    caArgs = (await stat(opts.caPath)).isDirectory() ? ['-CApath', opts.caPath] : ['-CAfile', opts.caPath];
  } catch {
    return { verified: false, reason: `CA path ${opts.caPath} (security.caPath) does not exist` };
  }
  const openssl = opts.openssl ?? 'openssl';
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-smime-'));
  try {
    const signerFile = path.join(dir, 'signer.pem');
    // -purpose any: AppDB signs with a host certificate (serverAuth), which the default
    // smimesign purpose check would refuse although the chain is sound.
    const result = await execa(openssl, ['smime', '-verify', '-inform', 'SMIME', ...caArgs, '-purpose', 'any', '-signer', signerFile], {
      input: message,
      encoding: 'buffer',
      reject: false,
      timeout: opts.timeoutMs ?? 30_000,
      stripFinalNewline: false,
    });
    if (result.timedOut) return { verified: false, reason: 'openssl timed out verifying the signature' };
    if (result.exitCode !== 0) {
      return { verified: false, reason: describeOpensslFailure(Buffer.from(result.stderr).toString('utf8'), result.exitCode) };
    }
    const names = await execa(openssl, ['x509', '-in', signerFile, '-noout', '-subject', '-issuer', '-nameopt', 'compat'], {
      reject: false,
      timeout: opts.timeoutMs ?? 30_000,
    });
    if (names.exitCode !== 0) return { verified: false, reason: `cannot read the signer certificate: ${names.stderr.trim()}` };
    return { verified: true, signer: parseSignerNames(names.stdout), content: Buffer.from(result.stdout) };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'ENOENT') return { verified: false, reason: `the ${openssl} command is not installed` };
    return { verified: false, reason: `openssl failed: ${e.message}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** openssl's stderr → the one line that says why (e.g. "self-signed certificate"). */
export function describeOpensslFailure(stderr: string, exitCode?: number): string {
  const verifyError = /Verify error:\s*(.+)/.exec(stderr);
  if (verifyError) return `signature verification failed: ${verifyError[1].trim()}`;
  const digest = /digest failure|signature failure/i.exec(stderr);
  if (digest) return 'signature verification failed: the content does not match the signature';
  const routine = /error:[0-9A-F]+:[^:]*:[^:]*:([^:\n]+)/.exec(stderr);
  if (routine) return `signature verification failed: ${routine[1].trim()}`;
  const first = stderr.split('\n').find((l) => l.trim() !== '' && !/^Verification/.test(l));
  return `signature verification failed${first ? `: ${first.trim()}` : ''} (openssl exit ${exitCode ?? '?'})`;
}

export function parseSignerNames(output: string): SignerIdentity {
  const subject = /^subject=\s*(.*)$/m.exec(output)?.[1] ?? '';
  const issuer = /^issuer=\s*(.*)$/m.exec(output)?.[1] ?? '';
  return { subject: normaliseDn(subject), issuer: normaliseDn(issuer) };
}

/** Attribute type spellings that mean the same thing, mapped to the one lists use most. */
const DN_TYPE_ALIASES: Record<string, string> = {
  EMAIL: 'emailAddress',
  E: 'emailAddress',
  EMAILADDRESS: 'emailAddress',
  USERID: 'UID',
  UID: 'UID',
  COMMONNAME: 'CN',
  COUNTRYNAME: 'C',
  ORGANIZATIONNAME: 'O',
  ORGANIZATIONALUNITNAME: 'OU',
  LOCALITYNAME: 'L',
  STATEORPROVINCENAME: 'ST',
  DOMAINCOMPONENT: 'DC',
};

/**
 * Any DN spelling openssl or a list may use → the slash form (`/DC=EU/O=Hosts/CN=x`):
 * slash form, openssl's one-line form (`C = AU, O = X`, same order) or RFC 2253
 * (`CN=x,O=X,C=AU`, reversed order). Attribute types are canonicalised, values kept.
 */
export function normaliseDn(dn: string): string {
  const text = dn.trim().replace(/^(subject|issuer)=\s*/i, '');
  if (text === '') return '';
  let rdns: string[];
  if (text.startsWith('/')) {
    rdns = text.slice(1).split(/\/(?=[A-Za-z][A-Za-z0-9.]*\s*=)/);
  } else {
    const parts = splitUnescaped(text, ',');
    const oneline = / = /.test(text);
    rdns = oneline ? parts : parts.reverse();
  }
  return rdns
    .map((rdn) => {
      const eq = rdn.indexOf('=');
      if (eq < 0) return rdn.trim();
      const type = rdn.slice(0, eq).trim();
      const value = rdn.slice(eq + 1).trim().replace(/\\(.)/g, '$1');
      return `${DN_TYPE_ALIASES[type.toUpperCase()] ?? type}=${value}`;
    })
    .map((rdn) => `/${rdn}`)
    .join('');
}

function splitUnescaped(text: string, separator: string): string[] {
  const out: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && i + 1 < text.length) {
      current += text[i] + text[++i];
    } else if (text[i] === separator) {
      out.push(current);
      current = '';
    } else current += text[i];
  }
  out.push(current);
  return out.map((s) => s.trim()).filter(Boolean);
}

export function sameDn(a: string, b: string): boolean {
  return normaliseDn(a) === normaliseDn(b);
}

export interface DeclaredEndorser {
  dn?: string;
  ca?: string;
}

/** Why the signer is not the list's declared endorser, or undefined when it is. */
export function endorserMismatch(signer: SignerIdentity, endorser: DeclaredEndorser | undefined): string | undefined {
  if (!endorser?.dn || !endorser.ca) return 'the list declares no hv:endorser hv:dn and hv:ca to pin the signer to';
  if (!sameDn(signer.subject, endorser.dn)) {
    return `signer ${signer.subject} is not the declared endorser ${normaliseDn(endorser.dn)} (hv:endorser.hv:x509.hv:dn)`;
  }
  if (!sameDn(signer.issuer, endorser.ca)) {
    return `signer's issuer ${signer.issuer} is not the declared CA ${normaliseDn(endorser.ca)} (hv:endorser.hv:x509.hv:ca)`;
  }
  return undefined;
}

/** What the envelope and openssl said, before the policy is applied. */
export type SignatureOutcome =
  | { state: 'unsigned' }
  | { state: 'invalid'; reason: string }
  | { state: 'verified'; signer: SignerIdentity; endorserProblem?: string };

export interface SignatureStatus {
  /** verified: signature good (and endorser matches when pinned); the rest are accepted only by policy. */
  status: 'verified' | 'unsigned' | 'invalid' | 'wrong-endorser';
  signer?: SignerIdentity;
  detail?: string;
  /** Set when the list was accepted although it did not verify: say it out loud. */
  warning?: string;
}

/**
 * The signature policy as a pure function: `require` refuses anything not verified
 * (and, with pinning, a signer that is not the declared endorser); `warn` accepts with a
 * warning; `accept` accepts and notes the status only.
 */
export function applySignaturePolicy(outcome: SignatureOutcome, policy: SignaturePolicy, pinEndorser: boolean): SignatureStatus {
  let status: SignatureStatus;
  if (outcome.state === 'unsigned') status = { status: 'unsigned', detail: 'the list is not signed' };
  else if (outcome.state === 'invalid') status = { status: 'invalid', detail: outcome.reason };
  else if (pinEndorser && outcome.endorserProblem) {
    status = { status: 'wrong-endorser', signer: outcome.signer, detail: outcome.endorserProblem };
  } else return { status: 'verified', signer: outcome.signer };

  if (policy === 'require') {
    throw new SignatureError(`image list refused: ${status.detail} (security.signaturePolicy = require)`);
  }
  if (policy === 'warn') status.warning = `image list accepted although ${status.detail} (security.signaturePolicy = warn)`;
  return status;
}
