import { Command, Option, UsageError } from 'clipanion';
import { DurationSchema, deadLetterQueue, type Config } from '../../core/config.js';
import {
  readDeadLetters,
  republish,
  takeDeadLetters,
  type DeadLetter,
  type DeadLetterChoice,
} from '../../bridge/dead-letters.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';
import { formatTable } from '../table.js';
import { isDuration } from '../validators.js';

const ID_PATTERN = /^[0-9a-f]{12}$/;

/**
 * Whether a dead letter is the one a selector names: a 12-hex-digit selector is its id (which never
 * changes), any other number its position in the queue (which shifts as messages leave it).
 */
export function selects(selector: string, letter: Pick<DeadLetter, 'id' | 'position'>): boolean {
  if (ID_PATTERN.test(selector)) return letter.id === selector;
  return /^\d+$/.test(selector) && Number(selector) === letter.position;
}

function checkSelectors(selectors: string[]): void {
  for (const s of selectors) {
    if (!ID_PATTERN.test(s) && !/^[1-9]\d*$/.test(s))
      throw new UsageError(`'${s}' is neither a dead letter's number (1, 2, …) nor its id (12 hex digits)`);
  }
}

/** A dead letter as a JSON object (`--json`), body aside. */
function letterJson(letter: DeadLetter): Record<string, unknown> {
  return {
    number: letter.position,
    id: letter.id,
    deadLetteredAt: letter.deadLetteredAt?.toISOString(),
    reason: letter.reason,
    key: letter.key,
    detail: letter.detail,
    imageIdentifier: letter.imageIdentifier,
    imageListIdentifier: letter.imageListIdentifier,
    title: letter.title,
    messageId: letter.messageId,
    originalQueue: letter.originalQueue,
    replays: letter.replays,
  };
}

function when(date: Date | undefined): string {
  return date ? date.toISOString().slice(0, 19).replace('T', ' ') : '?';
}

/** `image-1 of list-a`, or what the message lacks. */
function imageName(letter: DeadLetter): string {
  return `${letter.imageIdentifier ?? '(no image identifier)'} of ${letter.imageListIdentifier ?? '(no image list)'}`;
}

abstract class DeadLettersBase extends ConfiguredCommand {
  protected queueName(config: Config): string {
    return deadLetterQueue(config.rabbitmq);
  }
}

class DeadLettersCommand extends DeadLettersBase {
  static override paths = [['dead-letters']];
  static override usage = Command.Usage({
    description: 'List the messages of the dead-letter queue: when, why, and the image they name',
    details:
      'Reads `<queue>.dead` without changing it (the messages are read unacknowledged, then handed back in their order). `#` is the position in the queue, which shifts as messages leave it; `ID` never changes. `show`, `replay` and `purge` take either.',
    examples: [
      ['What the bridge could not take', '$0 dead-letters --conf /etc/snf-vmcatcher/application.conf'],
      ['The same, for a script', '$0 dead-letters --conf /etc/snf-vmcatcher/application.conf --json'],
    ],
  });

  json = Option.Boolean('--json', false, { description: 'Print JSON lines, one per message' });

  async run(): Promise<number> {
    const config = await this.config();
    const letters = await readDeadLetters(config.rabbitmq);
    if (this.json) {
      for (const letter of letters) this.out(JSON.stringify(letterJson(letter)));
      return EXIT.ok;
    }
    if (letters.length === 0) {
      this.say.note(`No dead letters in queue '${this.queueName(config)}'`);
      return EXIT.ok;
    }
    const header = ['#', 'ID', 'DEAD-LETTERED', 'REASON', 'IMAGE', 'IMAGE LIST', 'DETAIL'];
    const rows = letters.map((l) => [
      String(l.position),
      l.id,
      when(l.deadLetteredAt),
      l.reason,
      l.imageIdentifier ?? '',
      l.imageListIdentifier ?? '',
      (l.detail ?? '').replace(/\s+/g, ' ').slice(0, 100),
    ]);
    for (const line of formatTable(header, rows)) this.out(line);
    this.say.note(`${letters.length} dead letter(s) in queue '${this.queueName(config)}'`);
    return EXIT.ok;
  }
}

class DeadLettersShowCommand extends DeadLettersBase {
  static override paths = [['dead-letters', 'show']];
  static override usage = Command.Usage({
    description: 'Print one dead letter: why it was dead-lettered, its headers and its body',
    examples: [
      ['The third message of the listing', '$0 dead-letters show 3 --conf /etc/snf-vmcatcher/application.conf'],
      ['By its id', '$0 dead-letters show 4f2a9c01be7d --conf /etc/snf-vmcatcher/application.conf'],
    ],
  });

  selector = Option.String({ name: 'N' });
  json = Option.Boolean('--json', false, { description: 'Print it as JSON (the body as text)' });

  async run(): Promise<number> {
    checkSelectors([this.selector]);
    const config = await this.config();
    const letter = (await readDeadLetters(config.rabbitmq)).find((l) => selects(this.selector, l));
    if (!letter) return this.fail(`no dead letter ${this.selector} in queue '${this.queueName(config)}'`, EXIT.usage);
    const body = letter.body.toString('utf8');
    if (this.json) {
      this.out(JSON.stringify({ ...letterJson(letter), headers: letter.headers, body }, null, 2));
      return EXIT.ok;
    }
    const lines: Array<[string, string | number | undefined]> = [
      ['Number', letter.position],
      ['Id', letter.id],
      ['Dead-lettered', letter.deadLetteredAt?.toISOString() ?? 'unknown'],
      ['Reason', letter.reason],
      ['Key', letter.key],
      ['Detail', letter.detail],
      ['Image', letter.imageIdentifier],
      ['Title', letter.title],
      ['Image list', letter.imageListIdentifier],
      ['Message id', letter.messageId],
      ['From queue', letter.originalQueue],
      ['Replayed', letter.replays ? `${letter.replays} time(s) before` : undefined],
    ];
    for (const [name, value] of lines) if (value !== undefined && value !== '') this.out(`${name}: ${value}`);
    this.out('Headers:');
    for (const [name, value] of Object.entries(letter.headers))
      this.out(`  ${name}: ${Buffer.isBuffer(value) ? value.toString('utf8') : JSON.stringify(value)}`);
    this.out('Body:');
    let pretty = body;
    try {
      pretty = JSON.stringify(JSON.parse(body), null, 2);
    } catch {
      // Not JSON (often why it is here): print it as it is.
    }
    this.out(pretty);
    return EXIT.ok;
  }
}

class DeadLettersReplayCommand extends DeadLettersBase {
  static override paths = [['dead-letters', 'replay']];
  static override usage = Command.Usage({
    description: 'Send dead letters back to the queue, after fixing what made them fail',
    details:
      'Each chosen message is taken from `<queue>.dead`, published to the queue (persistent, confirmed by the broker) and only then removed, so a command killed midway loses nothing (at worst a message is on both queues; the workflow id absorbs the duplicate). A replayed message that fails again is dead-lettered again with its new reason; `show` counts its replays. Messages not chosen keep their place.',
    examples: [
      ['Everything', '$0 dead-letters replay --all --conf /etc/snf-vmcatcher/application.conf'],
      ['The messages of one image', '$0 dead-letters replay --image-identifier 24910a01-… --conf …'],
      ['Two messages of the listing', '$0 dead-letters replay 1 4f2a9c01be7d --conf …'],
    ],
  });

  all = Option.Boolean('--all', false, { description: 'Every dead letter' });
  imageIdentifier = Option.String('--image-identifier', { description: 'The dead letters naming this image' });
  selectors = Option.Rest({ name: 'N' });

  async run(): Promise<number> {
    checkSelectors(this.selectors);
    const chosen = [this.all, this.imageIdentifier !== undefined, this.selectors.length > 0].filter(Boolean).length;
    if (chosen !== 1)
      throw new UsageError('say which dead letters to replay: --all, --image-identifier I, or their numbers or ids');
    const config = await this.config();
    const choose = (letter: DeadLetter): DeadLetterChoice => {
      if (this.all) return 'take';
      if (this.imageIdentifier !== undefined) return letter.imageIdentifier === this.imageIdentifier ? 'take' : 'keep';
      return this.selectors.some((s) => selects(s, letter)) ? 'take' : 'keep';
    };
    const result = await takeDeadLetters(config.rabbitmq, choose, async (letter, channel, properties) => {
      await republish(config.rabbitmq, channel, letter, properties);
      this.out(`Replayed #${letter.position} ${letter.id}: ${imageName(letter)} (was ${letter.reason})`);
    });
    this.say.note(
      `Replayed ${result.taken.length} of ${result.seen.length} dead letter(s) to queue '${config.rabbitmq.queue}'`,
    );
    return this.reportUnmatched(result.taken, config);
  }

  private reportUnmatched(taken: DeadLetter[], config: Config): number {
    const missing = this.selectors.filter((s) => !taken.some((l) => selects(s, l)));
    if (this.imageIdentifier !== undefined && taken.length === 0) missing.push(`for image '${this.imageIdentifier}'`);
    if (missing.length === 0) return EXIT.ok;
    return this.fail(`no dead letter ${missing.join(', ')} in queue '${this.queueName(config)}'`, EXIT.usage);
  }
}

class DeadLettersPurgeCommand extends DeadLettersBase {
  static override paths = [['dead-letters', 'purge']];
  static override usage = Command.Usage({
    description: 'Remove dead letters for good: all of them, those older than a duration, or the ones named',
    details:
      'Without `--older-than` or numbers, every dead letter goes. `--older-than` goes by when the message was dead-lettered (the bridge records it; RabbitMQ`s x-death for what the broker dead-lettered); a message with no such time is kept.',
    examples: [
      [
        'Dead letters older than 30 days',
        '$0 dead-letters purge --older-than 30d --conf /etc/snf-vmcatcher/application.conf',
      ],
      ['Everything', '$0 dead-letters purge --conf /etc/snf-vmcatcher/application.conf'],
    ],
  });

  olderThan = Option.String('--older-than', {
    validator: isDuration,
    description: 'Only those dead-lettered longer ago than this (e.g. 30d, 12h)',
  });
  selectors = Option.Rest({ name: 'N' });

  async run(): Promise<number> {
    checkSelectors(this.selectors);
    const config = await this.config();
    const now = Date.now();
    const olderThanMs = this.olderThan === undefined ? undefined : DurationSchema.parse(this.olderThan);
    const choose = (letter: DeadLetter): DeadLetterChoice => {
      if (this.selectors.length > 0 && !this.selectors.some((s) => selects(s, letter))) return 'keep';
      if (olderThanMs === undefined) return 'take';
      return letter.deadLetteredAt && now - letter.deadLetteredAt.getTime() > olderThanMs ? 'take' : 'keep';
    };
    // Nothing to do with a purged message but ack it.
    const result = await takeDeadLetters(config.rabbitmq, choose, async () => undefined);
    for (const letter of result.taken)
      this.out(
        `Purged #${letter.position} ${letter.id}: ${imageName(letter)} (${letter.reason}, ${when(letter.deadLetteredAt)})`,
      );
    this.say.note(
      `Purged ${result.taken.length} of ${result.seen.length} dead letter(s) from queue '${this.queueName(config)}'`,
    );
    return EXIT.ok;
  }
}

export const deadLettersCommands = [
  DeadLettersCommand,
  DeadLettersShowCommand,
  DeadLettersReplayCommand,
  DeadLettersPurgeCommand,
];
