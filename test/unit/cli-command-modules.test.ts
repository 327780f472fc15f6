import { commandsFor, commandWords } from '../../cli/commands/index.js';

/**
 * The CLI loads only the module that a command line's first word names, so that table must name
 * every command's first word, and each word must load exactly the commands whose paths start with it.
 */
describe('the CLI loads the module of the command it runs, and only that', () => {
  const firstWords = async (argv: string[]) =>
    [...new Set((await commandsFor(argv)).flatMap((c) => (c.paths ?? []).map((p) => p[0]!)))].sort();

  test('every command is reachable by its first word, and a word loads only its own module', async () => {
    const all = await commandsFor([]);
    const words = [...new Set(all.flatMap((c) => (c.paths ?? []).map((p) => p[0]!)))].sort();
    expect(words).toEqual([...commandWords].sort());
    for (const word of commandWords.filter((w) => w !== 'usage')) {
      const loaded = await commandsFor([word, '--help']);
      const wanted = all.filter((c) => (c.paths ?? []).some((p) => p[0] === word));
      // The module holding `word` loads every command that starts with it (and no command of another module).
      for (const command of wanted) expect(loaded).toContain(command);
      expect(loaded.length).toBeLessThan(all.length);
    }
  });

  test('`usage`, `--help` and an unknown word load every command (help and suggestions list them all)', async () => {
    const all = await firstWords([]);
    expect(await firstWords(['usage'])).toEqual(all);
    expect(await firstWords(['--help'])).toEqual(all);
    expect(await firstWords(['subscritpions'])).toEqual(all);
    expect(await firstWords(['sync-now'])).toEqual(['subscribe', 'subscriptions', 'sync-now', 'unsubscribe']);
  });
});
