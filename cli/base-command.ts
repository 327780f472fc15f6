import { Command, Option, UsageError } from 'clipanion';
import { loadConfig, secretValues, type Config } from '../core/config.js';
import { ConfigError, InvalidInputError, SnfVmcatcherError } from '../core/errors.js';
import { createLogger, registerSecrets, scrubSecrets, type Logger } from '../core/logging.js';
import type { CliContext } from './context.js';

/** Exit codes of every command; the README's "Exit codes" table is their documentation. */
export const EXIT = {
  ok: 0,
  /** The operation ran and failed: registration failed, broker unreachable, list refused. */
  failed: 1,
  /** The user's mistake: bad option, bad configuration. */
  usage: 2,
  /** A bug or an unexpected condition; the stack trace is printed with --verbose. */
  unexpected: 3,
} as const;

type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/**
 * A command's lines for the person at the terminal, on stderr (stdout is for results), each
 * scrubbed of the secrets the configuration and options named.
 */
export interface Say {
  /** Progress or status, worded as the original printed it: no prefix. */
  note(text: string): void;
  /** Something is off but the command goes on: `snf-vmcatcher: warning: …`. */
  warn(text: string): void;
  /** Why the command fails: `snf-vmcatcher: …`, one line. */
  error(text: string): void;
}

const PREFIX = 'snf-vmcatcher: ';

/**
 * Shared options and error handling. Subclasses implement `run()`; every error is mapped
 * here, once, to one line on stderr and an exit code.
 */
export abstract class BaseCommand extends Command<CliContext> {
  verbose = Option.Boolean('--verbose', false, { description: 'Log debug detail to stderr (the original -v)' });
  workingFolder = Option.String('--working-folder', {
    description: 'Folder for downloads and temporary files (the original global -working-folder)',
  });

  private cachedLogger?: Logger;
  private cachedSay?: Say;

  abstract run(): Promise<number | void>;

  get log(): Logger {
    this.cachedLogger ??= createLogger(this.path.join(' ') || 'snf-vmcatcher', {
      verbose: this.verbose,
      destination: this.context.stderr,
    });
    return this.cachedLogger;
  }

  async execute(): Promise<number> {
    try {
      return (await this.run()) ?? EXIT.ok;
    } catch (err) {
      return this.report(err);
    }
  }

  get say(): Say {
    this.cachedSay ??= {
      note: (text) => this.stderrLine(text),
      warn: (text) => this.stderrLine(`${PREFIX}warning: ${text}`),
      error: (text) => this.stderrLine(`${PREFIX}${text}`),
    };
    return this.cachedSay;
  }

  /** Says why the command fails and gives its exit code: `return this.fail('…')`. */
  protected fail(text: string, code: ExitCode = EXIT.failed): ExitCode {
    this.say.error(text);
    return code;
  }

  /** The one mapping from a thrown error to a line and an exit code. */
  protected report(err: unknown): ExitCode {
    if (err instanceof UsageError || err instanceof ConfigError || err instanceof InvalidInputError)
      return this.fail(err.message, EXIT.usage);
    const known = err instanceof SnfVmcatcherError;
    const e = err as Error | undefined;
    this.say.error(known ? e!.message : `unexpected error: ${e?.message ?? String(err)}`);
    if (this.verbose && e?.stack) this.stderrLine(e.stack);
    return known ? EXIT.failed : EXIT.unexpected;
  }

  private stderrLine(text: string): void {
    const line = scrubSecrets(text);
    this.context.stderr.write(line.endsWith('\n') ? line : `${line}\n`);
  }

  /** Writes a result line to stdout. */
  protected out(text: string): void {
    this.context.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }
}

/** A command that reads the configuration file (`--conf`, the original `-conf`). */
export abstract class ConfiguredCommand extends BaseCommand {
  conf = Option.String('--conf', {
    description: 'Configuration file: the original HOCON application.conf, or JSON (default: $SNF_VMCATCHER_CONF)',
  });

  private loaded?: { config: Config; source?: string };

  async config(): Promise<Config> {
    return (await this.loadedConfig()).config;
  }

  async loadedConfig(): Promise<{ config: Config; source?: string }> {
    if (!this.loaded) {
      this.loaded = await loadConfig({
        file: this.conf,
        env: this.context.env,
        overrides: { 'worker.workingFolder': this.workingFolder },
      });
      registerSecrets(secretValues(this.loaded.config));
    }
    return this.loaded;
  }

  /** How to name the configuration in messages: the file, or "the default configuration". */
  get configName(): string {
    return this.loaded?.source ?? this.conf ?? this.context.env.SNF_VMCATCHER_CONF ?? 'the default configuration';
  }
}
