import { createInterface } from 'node:readline';
import { pino, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';

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

interface LogOptions {
  verbose?: boolean;
  /** Where lines go; stderr by default, so stdout stays for results. */
  destination?: NodeJS.WritableStream;
}

type LogFormat = 'json' | 'pretty';

/**
 * `SNF_VMCATCHER_LOG_FORMAT` (json or pretty) when set; otherwise pretty for a person at a
 * terminal and JSON lines for everything else (journald, files, pipes, log shippers).
 */
export function logFormat(destination: NodeJS.WritableStream, env: NodeJS.ProcessEnv = process.env): LogFormat {
  const asked = env.SNF_VMCATCHER_LOG_FORMAT?.trim().toLowerCase();
  if (asked === 'json' || asked === 'pretty') return asked;
  return (destination as { isTTY?: boolean }).isTTY === true ? 'pretty' : 'json';
}

/** Keys a readable line shows before the message as the image and the stage, first found wins. */
const IMAGE_KEYS = ['imageId', 'image', 'workflowId'] as const;
const STAGE_KEYS = ['stage', 'activityType', 'workflowType', 'step', 'tool', 'component', 'part'] as const;

function firstOf(log: Record<string, unknown>, keys: readonly string[]): string | undefined {
  for (const key of keys) {
    const value = log[key];
    if (typeof value === 'string' && value) return value;
  }
  return undefined;
}

/**
 * One readable line per event: `HH:MM:ss.l LEVEL image [stage] message {the other keys}`. The
 * options of pino-pretty for both the in-process stream (a terminal) and prettifyLines (the
 * stack's terminal, fed the JSON its log files keep).
 */
function prettyOptions(colorize: boolean): pinoPretty.PrettyOptions {
  return {
    colorize,
    translateTime: 'SYS:HH:MM:ss.l',
    singleLine: true,
    // `err` is a string or an object here like any other key: inline, so an event stays one line.
    errorLikeObjectKeys: [],
    // Shown by messageFormat, or noise at a terminal (the process, the command's name).
    ignore: ['pid', 'hostname', 'name', ...IMAGE_KEYS, ...STAGE_KEYS].join(','),
    messageFormat: (log, messageKey) => {
      const image = firstOf(log, IMAGE_KEYS);
      const stage = firstOf(log, STAGE_KEYS);
      const message = typeof log[messageKey] === 'string' ? (log[messageKey] as string) : '';
      return `${image ? `${image} ` : ''}${stage ? `[${stage}] ` : ''}${message}`;
    },
  };
}

/**
 * Turns JSON log lines into readable ones (other lines pass unchanged): what `npm run stack`
 * shows at a terminal while its log files keep the JSON.
 */
export async function prettifyLines(
  input: NodeJS.ReadableStream,
  output: NodeJS.WritableStream,
  opts: { colorize?: boolean } = {},
): Promise<void> {
  const pretty = pinoPretty.prettyFactory(prettyOptions(opts.colorize ?? false));
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    let parsed: unknown;
    try {
      parsed = line.startsWith('{') ? JSON.parse(line) : undefined;
    } catch {
      parsed = undefined;
    }
    output.write(parsed && typeof parsed === 'object' ? pretty(parsed) : `${line}\n`);
  }
}

/**
 * Structured logs to stderr: JSON lines (for journald and log shippers) or, at a terminal, one
 * readable line per event (logFormat); key-based redaction plus a scrub of every registered
 * secret value either way.
 */
export function createLogger(name: string, opts: LogOptions = {}): Logger {
  const level = process.env.SNF_VMCATCHER_LOG_LEVEL ?? (opts.verbose ? 'debug' : 'info');
  const destination = opts.destination ?? process.stderr;
  const scrubbing = {
    write(line: string) {
      destination.write(scrubSecrets(line));
    },
  };
  // Each line is prettified as it is written (synchronously, so a worker's last lines before it
  // exits are not lost); colours only at a terminal.
  const pretty =
    logFormat(destination) === 'pretty'
      ? pinoPretty.prettyFactory(
          prettyOptions((destination as { isTTY?: boolean }).isTTY === true && !process.env.NO_COLOR),
        )
      : undefined;
  const stream = pretty ? { write: (line: string) => scrubbing.write(pretty(line)) } : scrubbing;
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
    stream,
  );
}
