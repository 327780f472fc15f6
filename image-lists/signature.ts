import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import type { SignaturePolicy } from '../core/config.js';
import { SignatureError } from '../core/errors.js';

/**
 * S/MIME verification with the `openssl` command (no PKCS#7 parsing of our own, CRLs from
 * the CA folder), endorser pinning, and the policies that decide what to do with the outcome.
 * Which endorsers the configuration authorises is subscription.ts's business.
 */

export interface SignerIdentity {
  /** Subject DN in the slash form image lists use (`/C=…/O=…/CN=…`). */
  subject: string;
  issuer: string;
}

type VerificationResult =
  | { verified: true; signer: SignerIdentity; content: Buffer; crlChecked: boolean; signerPem: string }
  | { verified: false; reason: string; signer?: SignerIdentity; crlChecked?: boolean };

interface VerifyOptions {
  /** A CA file (PEM bundle) or a hashed CA directory (like /etc/grid-security/certificates). */
  caPath: string;
  /** `auto`: check CRLs when the CA directory holds `*.r0` files; `off`: never. */
  crlCheck?: 'auto' | 'off';
  timeoutMs?: number;
  openssl?: string;
}

/** fetch-crl writes each CA's CRL as `<hash>.r0` next to its `<hash>.0` certificate. */
async function hasCrlFiles(caDir: string): Promise<boolean> {
  try {
    return (await readdir(caDir)).some((name) => /\.r\d+$/.test(name));
  } catch {
    return false;
  }
}

/** openssl's arguments naming the CAs (and, when the folder holds CRLs, checking them), or why there are none. */
async function caArguments(opts: VerifyOptions): Promise<{ caArgs: string[]; crlChecked: boolean } | string> {
  try {
    if ((await stat(opts.caPath)).isDirectory()) {
      const caArgs = ['-CApath', opts.caPath];
      // openssl finds `<hash>.rN` CRLs in a -CApath folder by itself; -crl_check_all makes a
      // missing or expired CRL of any CA in the chain an error instead of a silent pass.
      const crlChecked = opts.crlCheck !== 'off' && (await hasCrlFiles(opts.caPath));
      if (crlChecked) caArgs.push('-crl_check_all');
      return { caArgs, crlChecked };
    }
    return { caArgs: ['-CAfile', opts.caPath], crlChecked: false };
  } catch {
    return `CA path ${opts.caPath} (security.caPath) does not exist`;
  }
}

/** Runs `openssl smime -verify` on the whole S/MIME message; never throws for a bad signature. */
export async function verifySmime(message: Buffer, opts: VerifyOptions): Promise<VerificationResult> {
  const cas = await caArguments(opts);
  if (typeof cas === 'string') return { verified: false, reason: cas };
  const { caArgs, crlChecked } = cas;
  const openssl = opts.openssl ?? 'openssl';
  const timeout = opts.timeoutMs ?? 30_000;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-smime-'));
  try {
    const signerFile = path.join(dir, 'signer.pem');
    // -purpose any: AppDB signs with a host certificate (serverAuth), which the default
    // smimesign purpose check would refuse although the chain is sound.
    const result = await execa(
      openssl,
      ['smime', '-verify', '-inform', 'SMIME', ...caArgs, '-purpose', 'any', '-signer', signerFile],
      {
        input: message,
        encoding: 'buffer',
        reject: false,
        timeout,
        stripFinalNewline: false,
      },
    );
    if (result.timedOut) return { verified: false, reason: 'openssl timed out verifying the signature' };
    if (result.exitCode !== 0) {
      const stderr = Buffer.from(result.stderr).toString('utf8');
      const reason = describeOpensslFailure(stderr, result.exitCode, crlChecked);
      if (!/Verify error/.test(stderr)) return { verified: false, reason, crlChecked };
      // openssl writes no -signer file when the chain fails: name the signer another way.
      const unverified = await inspectUnverified(openssl, message, path.join(dir, 'unverified.pem'), timeout);
      const mismatch = unverified.contentMismatch ? '; the content does not match the signature either' : '';
      return { verified: false, reason: `${reason}${mismatch}`, signer: unverified.signer, crlChecked };
    }
    const signer = await readSignerNames(openssl, signerFile, timeout);
    if (typeof signer === 'string') return { verified: false, reason: `cannot read the signer certificate: ${signer}` };
    const signerPem = await readFile(signerFile, 'utf8');
    return { verified: true, signer, content: Buffer.from(result.stdout), crlChecked, signerPem };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'ENOENT') return { verified: false, reason: `the ${openssl} command is not installed` };
    return { verified: false, reason: `openssl failed: ${e.message}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Checks a signer certificate kept with an accepted list again (`openssl verify`), against the
 * CAs and CRLs of now: a list answered 304 Not Modified is trusted only while its signer is.
 */
export async function verifySignerCertificate(
  pem: string,
  opts: VerifyOptions,
): Promise<{ ok: true; signer: SignerIdentity } | { ok: false; reason: string }> {
  const cas = await caArguments(opts);
  if (typeof cas === 'string') return { ok: false, reason: cas };
  const openssl = opts.openssl ?? 'openssl';
  const timeout = opts.timeoutMs ?? 30_000;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-signer-'));
  try {
    const certFile = path.join(dir, 'signer.pem');
    await writeFile(certFile, pem);
    const result = await execa(openssl, ['verify', ...cas.caArgs, '-purpose', 'any', certFile], {
      reject: false,
      timeout,
    });
    if (result.timedOut) return { ok: false, reason: 'openssl timed out verifying the signer certificate' };
    if (result.exitCode !== 0 || !/: OK\s*$/.test(result.stdout)) {
      const text = `${result.stderr}\n${result.stdout}`;
      const error = /error \d+ at \d+ depth lookup:\s*(.*)/.exec(text)?.[1];
      const crl = error && cas.crlChecked ? CRL_ERRORS.find(([pattern]) => pattern.test(error)) : undefined;
      return {
        ok: false,
        reason: `the signer certificate no longer verifies: ${crl ? crl[1] : (error ?? text.trim()).trim()}`,
      };
    }
    const signer = await readSignerNames(openssl, certFile, timeout);
    if (typeof signer === 'string') return { ok: false, reason: `cannot read the signer certificate: ${signer}` };
    return { ok: true, signer };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'ENOENT') return { ok: false, reason: `the ${openssl} command is not installed` };
    return { ok: false, reason: `openssl failed: ${e.message}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function readSignerNames(openssl: string, certFile: string, timeout: number): Promise<SignerIdentity | string> {
  const names = await execa(openssl, ['x509', '-in', certFile, '-noout', '-subject', '-issuer', '-nameopt', 'compat'], {
    reject: false,
    timeout,
  });
  return names.exitCode === 0 ? parseSignerNames(names.stdout) : names.stderr.trim();
}

/**
 * A message whose certificate chain failed: is the signature itself intact, and by whom?
 * openssl checks the chain first, so this is how an operator learns both.
 */
async function inspectUnverified(
  openssl: string,
  message: Buffer,
  certFile: string,
  timeout: number,
): Promise<{ signer?: SignerIdentity; contentMismatch: boolean }> {
  const result = await execa(
    openssl,
    ['smime', '-verify', '-inform', 'SMIME', '-noverify', '-signer', certFile, '-out', os.devNull],
    {
      input: message,
      reject: false,
      timeout,
    },
  );
  if (result.exitCode !== 0) return { contentMismatch: /digest failure|signature failure/i.test(result.stderr) };
  const signer = await readSignerNames(openssl, certFile, timeout);
  return { signer: typeof signer === 'string' ? undefined : signer, contentMismatch: false };
}

/** What openssl's CRL errors mean for an operator; the CRLs come from fetch-crl. */
const CRL_ERRORS: Array<[RegExp, string]> = [
  [
    /certificate revoked/i,
    "the signer's certificate, or a CA certificate above it, has been revoked (CRL in security.caPath)",
  ],
  [
    /unable to get certificate CRL/i,
    "no CRL for a CA in the signer's chain: CRLs are checked because security.caPath holds *.r0 files (run fetch-crl, or set security.crlCheck = off)",
  ],
  [/CRL has expired/i, 'a CRL in security.caPath has expired (run fetch-crl)'],
  [/CRL is not yet valid/i, 'a CRL in security.caPath is not yet valid (check the clock)'],
];

/** openssl's stderr → the one line that says why (e.g. "self-signed certificate"). */
export function describeOpensslFailure(stderr: string, exitCode?: number, crlChecked = false): string {
  const verifyError = /Verify error:\s*(.+)/.exec(stderr);
  if (verifyError) {
    const crl = crlChecked ? CRL_ERRORS.find(([pattern]) => pattern.test(verifyError[1])) : undefined;
    return `signature verification failed: ${crl ? crl[1] : verifyError[1].trim()}`;
  }
  const digest = /digest failure|signature failure/i.exec(stderr);
  if (digest) return 'signature verification failed: the content does not match the signature';
  const routine = /error:[0-9A-F]+:[^:]*:[^:]*:([^:\n]+)/.exec(stderr);
  if (routine) return `signature verification failed: ${routine[1].trim()}`;
  const first = stderr.split('\n').find((l) => l.trim() !== '' && !/^Verification/.test(l));
  return `signature verification failed${first ? `: ${first.trim()}` : ''} (openssl exit ${exitCode ?? '?'})`;
}

function parseSignerNames(output: string): SignerIdentity {
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
      const value = rdn
        .slice(eq + 1)
        .trim()
        .replace(/\\(.)/g, '$1');
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

interface DeclaredEndorser {
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
  | { state: 'invalid'; reason: string; signer?: SignerIdentity }
  | {
      state: 'verified';
      signer: SignerIdentity;
      /** Why the signer is not the list's declared hv:endorser. */
      endorserProblem?: string;
      /** Why the signer is not among the endorsers the configuration authorises for this list. */
      authorisationProblem?: string;
    };

export interface SignatureStatus {
  /**
   * verified: signature good, signer is the declared endorser (when pinned) and an authorised
   * one; the others are accepted only by policy.
   */
  status: 'verified' | 'unsigned' | 'invalid' | 'wrong-endorser' | 'unauthorised-endorser';
  signer?: SignerIdentity;
  detail?: string;
  /** Set when the list was accepted although it did not verify: say it out loud. */
  warning?: string;
}

interface TrustPolicy {
  signaturePolicy: SignaturePolicy;
  pinEndorser: boolean;
  /** Unset: the same as signaturePolicy. */
  endorserPolicy?: SignaturePolicy;
}

/**
 * The policies as a pure function. `security.signaturePolicy` governs the signature itself
 * (and, with pinning, a signer that is not the declared endorser); `security.endorserPolicy`
 * governs a signer the configuration does not authorise. `require` refuses, `warn` accepts
 * with a warning, `accept` accepts and notes the status only.
 */
export function applySignaturePolicy(outcome: SignatureOutcome, policy: TrustPolicy): SignatureStatus {
  interface Check {
    status: SignatureStatus['status'];
    detail: string;
    policy: SignaturePolicy;
    /** The setting that decided, as the message names it. */
    because: (policy: SignaturePolicy) => string;
  }
  const bySignaturePolicy = {
    policy: policy.signaturePolicy,
    because: (p: SignaturePolicy) => `security.signaturePolicy = ${p}`,
  };
  const checks: Check[] = [];
  if (outcome.state === 'unsigned')
    checks.push({ status: 'unsigned', detail: 'the list is not signed', ...bySignaturePolicy });
  else if (outcome.state === 'invalid') {
    const signer = outcome.signer ? ` (signer ${outcome.signer.subject}, CA ${outcome.signer.issuer})` : '';
    checks.push({ status: 'invalid', detail: `${outcome.reason}${signer}`, ...bySignaturePolicy });
  } else {
    if (policy.pinEndorser && outcome.endorserProblem)
      checks.push({ status: 'wrong-endorser', detail: outcome.endorserProblem, ...bySignaturePolicy });
    if (outcome.authorisationProblem) {
      checks.push({
        status: 'unauthorised-endorser',
        detail: outcome.authorisationProblem,
        policy: policy.endorserPolicy ?? policy.signaturePolicy,
        because: (p) =>
          policy.endorserPolicy
            ? `security.endorserPolicy = ${p}`
            : `security.endorserPolicy unset, so security.signaturePolicy = ${p} applies`,
      });
    }
  }
  const signer = outcome.state === 'unsigned' ? undefined : outcome.signer;
  if (checks.length === 0) return { status: 'verified', signer };

  const refused = checks.find((c) => c.policy === 'require');
  if (refused) throw new SignatureError(`image list refused: ${refused.detail} (${refused.because('require')})`);
  const warnings = checks
    .filter((c) => c.policy === 'warn')
    .map((c) => `image list accepted although ${c.detail} (${c.because('warn')})`);
  return {
    status: checks[0].status,
    signer,
    detail: checks.map((c) => c.detail).join('; '),
    ...(warnings.length ? { warning: warnings.join('; ') } : {}),
  };
}
