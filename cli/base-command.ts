import { Command, Option, UsageError } from 'clipanion';
import { loadConfig, secretValues, type Config } from '../core/config.js';
import { ConfigError, InvalidInputError, SnfVmcatcherError } from '../core/errors.js';
import { InvalidEventError } from '../core/event.js';
import { createLogger, registerSecrets, scrubSecrets, type Logger } from '../core/logging.js';
import type { CliContext } from './context.js';

/** Exit codes of every command (README "Exit codes"). */
export const EXIT = {
  ok: 0,
  /** The operation ran and failed: registration failed, broker unreachable, list refused. */
  failed: 1,
  /** The user's mistake: bad option, bad configuration. */
  usage: 2,
  /** A bug or an unexpected condition; the stack trace is printed with --verbose. */
  unexpected: 3,
} as const;

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

  protected report(err: unknown): number {
    const line = (msg: string) => this.context.stderr.write(`snf-vmcatcher: ${scrubSecrets(msg)}\n`);
    if (err instanceof UsageError || err instanceof ConfigError || err instanceof InvalidInputError || err instanceof InvalidEventError) {
      line(err.message);
      return EXIT.usage;
    }
    if (err instanceof SnfVmcatcherError) {
      line(err.message);
      if (this.verbose && err.stack) this.context.stderr.write(`${scrubSecrets(err.stack)}\n`);
      return EXIT.failed;
    }
    const e = err as Error;
    line(`unexpected error: ${e?.message ?? String(err)}`);
    if (this.verbose && e?.stack) this.context.stderr.write(`${scrubSecrets(e.stack)}\n`);
    return EXIT.unexpected;
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
