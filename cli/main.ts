import { packageVersion } from '../core/package-info.js';
import { Builtins, Cli } from 'clipanion';
import { EXIT } from './base-command.js';
import { commandsFor } from './commands/index.js';
import type { CliContext } from './context.js';
import { translateLegacyArgv } from './legacy-argv.js';

function buildCli(commands: Awaited<ReturnType<typeof commandsFor>>): Cli<CliContext> {
  const cli = new Cli<CliContext>({
    binaryLabel: 'snf-vmcatcher',
    binaryName: 'snf-vmcatcher',
    binaryVersion: packageVersion(),
    enableColors: false,
  });
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  for (const command of commands) cli.register(command);
  return cli;
}

/** Runs the CLI with the original's argument conventions; resolves to the exit code. */
export async function main(argv: readonly string[], context: Partial<CliContext> = {}): Promise<number> {
  const ctx: CliContext = {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    colorDepth: 1,
    env: process.env,
    ...context,
  };
  const { argv: translated, noCommand } = translateLegacyArgv(argv);
  const cli = buildCli(await commandsFor(noCommand ? [] : translated));
  if (noCommand) {
    ctx.stdout.write(cli.usage(null));
    return EXIT.failed;
  }
  let command;
  try {
    command = cli.process(translated, ctx);
  } catch (err) {
    ctx.stderr.write(cli.error(err as Error, { colored: false }));
    return EXIT.usage;
  }
  return cli.run(command, ctx);
}
