import { pino, type Logger } from 'pino';

export type { Logger };

let secrets: string[] = [];

/** Registers values that must never be printed (passwords, tokens); every log line is scrubbed. */
export function registerSecrets(values: Iterable<string | undefined>): void {
  for (const value of values) {
    if (value && value.length >= 4 && !secrets.includes(value)) secrets.push(value);
  }
  // Longest first, so a secret containing another is replaced whole.
  secrets = secrets.sort((a, b) => b.length - a.length);
}

export function scrubSecrets(text: string): string {
  let out = text;
  for (const secret of secrets) out = out.split(secret).join('***');
  // userinfo in URLs (https://TOKEN:x-oauth-basic@host/...) is a secret whatever it is.
  return out.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s:@]+:[^/\s@]*@/gi, '$1***@');
}

export interface LogOptions {
  verbose?: boolean;
  /** Where lines go; stderr by default, so stdout stays for results. */
  destination?: NodeJS.WritableStream;
}

/**
 * Structured logs to stderr: JSON lines by default (for journald and log shippers),
 * with key-based redaction plus a scrub of every registered secret value.
 */
export function createLogger(name: string, opts: LogOptions = {}): Logger {
  const level = process.env.SNF_VMCATCHER_LOG_LEVEL ?? (opts.verbose ? 'debug' : 'info');
  const destination = opts.destination ?? process.stderr;
  const scrubbing = {
    write(line: string) {
      destination.write(scrubSecrets(line));
    },
  };
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'password',
          'token',
          'apiKey',
          '*.password',
          '*.token',
          '*.apiKey',
          'headers.authorization',
          '*.headers.authorization',
        ],
        censor: '***',
      },
    },
    scrubbing,
  );
}
