/**
 * Translates the original JCommander command line into this CLI's (README "Commands"):
 * single-dash option names become double-dash, and the global options the original took
 * before the command (`-v`, `-h`/`-help`, `-working-folder`) move after it, so an existing
 * vmcatcher hook line keeps working unchanged.
 */

/** Original option name → ours. Names already in our spelling are accepted as they are. */
const LEGACY_OPTIONS: Readonly<Record<string, string>> = {
  '-conf': '--conf',
  '-image-list-url': '--image-list-url',
  '-token': '--token',
  '-token-file': '--token-file',
  '-credential': '--credential',
  '-image-identifier': '--image-identifier',
  '-server': '--server',
  '-sleepMillis': '--sleep-millis',
  '--sleepMillis': '--sleep-millis',
  '-handler': '--handler',
  '-kamaki-cloud': '--kamaki-cloud',
  '-insecure-ssl': '--insecure-ssl',
  '-insecure-SSL': '--insecure-ssl',
  '--insecure-SSL': '--insecure-ssl',
  '-url': '--url',
  '-osfamily': '--osfamily',
  '-users': '--users',
  '-format': '--format',
  '-working-folder': '--working-folder',
};

/** Options (in our spelling) that take a value, so the token after them is never translated. */
const TAKES_VALUE = new Set([
  '--conf',
  '--image-list-url',
  '--token',
  '--token-file',
  '--credential',
  '--image-identifier',
  '--sleep-millis',
  '--handler',
  '--kamaki-cloud',
  '--url',
  '--osfamily',
  '--users',
  '--format',
  '--working-folder',
  '--sha512',
  '--size',
  '--prefetch',
  '--metrics-port',
  '--cloud',
  '--endorser-ca',
  '--endorser-dn',
  '--every',
  '--image',
  '--image-list-identifier',
  '--limit',
  '--older-than',
  '--since',
  '--stage',
  '--status',
  '--timeout',
  '--vo',
]);

const GLOBAL_FLAGS: Readonly<Record<string, string>> = {
  '-v': '--verbose',
  '--verbose': '--verbose',
  '-h': '--help',
  '-help': '--help',
  '--help': '--help',
};

interface TranslatedArgv {
  /** Arguments for clipanion: the command path first, then its options. */
  argv: string[];
  /** True when no command was named at all (the original then printed usage and exited 1). */
  noCommand: boolean;
}

function translateOption(token: string): string {
  const eq = token.indexOf('=');
  const name = eq > 0 ? token.slice(0, eq) : token;
  const mapped = LEGACY_OPTIONS[name];
  if (!mapped) return token;
  return eq > 0 ? `${mapped}${token.slice(eq)}` : mapped;
}

export function translateLegacyArgv(input: readonly string[]): TranslatedArgv {
  const globals: string[] = [];
  let i = 0;
  for (; i < input.length; i++) {
    const token = input[i];
    if (GLOBAL_FLAGS[token]) {
      globals.push(GLOBAL_FLAGS[token]);
    } else if (token === '-working-folder' || token === '--working-folder') {
      globals.push('--working-folder');
      if (i + 1 < input.length) globals.push(input[++i]);
    } else if (token.startsWith('-working-folder=') || token.startsWith('--working-folder=')) {
      globals.push(`--working-folder=${token.slice(token.indexOf('=') + 1)}`);
    } else {
      break;
    }
  }
  const rest: string[] = [];
  let expectValue = false;
  for (; i < input.length; i++) {
    const token = input[i];
    if (expectValue) {
      rest.push(token);
      expectValue = false;
      continue;
    }
    const translated = token.startsWith('-') ? translateOption(token) : token;
    rest.push(translated);
    expectValue = TAKES_VALUE.has(translated);
  }
  const noCommand = rest.length === 0 || rest[0].startsWith('-');
  if (noCommand && globals.includes('--help')) {
    return { argv: ['usage'], noCommand: false };
  }
  return { argv: [...rest, ...globals], noCommand };
}
