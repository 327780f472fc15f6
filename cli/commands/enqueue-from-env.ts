import { Command } from 'clipanion';
import { produceMessages } from '../../bridge/producer.js';
import { serialiseEvent } from '../../bridge/publisher.js';
import { spoolNeedsReplay } from '../../bridge/spool.js';
import { eventAction, eventFromEnvironment, InvalidEventError, VMCATCHER_VARIABLES } from '../../core/event.js';
import { InvalidInputError } from '../../core/errors.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

export class EnqueueFromEnvCommand extends ConfiguredCommand {
  static override paths = [['enqueue-from-env']];
  static override usage = Command.Usage({
    description: 'The vmcatcher cache hook: publish the event in the VMCATCHER_* variables to RabbitMQ',
    details: `
      Only AvailablePostfix (register) and ExpirePostfix (expire) events are published; the
      other vmcatcher events need no action and are skipped with exit 0. When RabbitMQ cannot
      be reached or does not confirm, the event is written to spool.folder and the command
      still exits 0 (vmcatcher never sends an event twice); the next enqueue, or the bridge
      on start, publishes it.
    `,
    examples: [
      [
        'As the vmcatcher hook (VMCATCHER_CACHE_EVENT)',
        '$0 -v enqueue-from-env -conf /etc/snf-vmcatcher/application.conf',
      ],
    ],
  });

  async run(): Promise<number> {
    const config = await this.config();
    const env = this.context.env;
    const flat = Object.fromEntries(
      VMCATCHER_VARIABLES.filter((k) => env[k] !== undefined).map((k) => [k, env[k] as string]),
    );
    if (Object.keys(flat).length === 0) {
      throw new InvalidInputError(
        'no VMCATCHER_* variables in the environment: enqueue-from-env runs as the vmcatcher cache hook (VMCATCHER_CACHE_EVENT)',
      );
    }
    let body: Buffer;
    try {
      const event = eventFromEnvironment(env);
      this.log.debug({ event: flat }, 'event (sysenv)');
      if (eventAction(event) === 'ignore') {
        this.log.info({ type: event.type, imageId: event.imageId }, 'event needs no action; not enqueued');
        await this.replayOnly(config);
        return EXIT.ok;
      }
      body = serialiseEvent(event);
    } catch (err) {
      if (!(err instanceof InvalidEventError)) throw err;
      // Never lose what vmcatcher sent: publish it as it came; the bridge dead-letters it with the reason.
      this.log.warn(
        { reason: err.message, event: flat },
        'event is not valid; publishing it as received so it is dead-lettered, not lost',
      );
      body = Buffer.from(`${JSON.stringify(flat, null, 2)}\n`);
    }
    const result = await produceMessages(config, [body], this.log, { spoolOnFailure: true });
    if (result.spooled.length > 0) {
      this.say.warn(
        `event not published (${result.brokerProblem}); spooled to ${result.spooled[0]}; the next enqueue or the bridge will publish it`,
      );
    } else {
      this.log.info({ replayed: result.replay?.published ?? 0 }, 'event published');
    }
    return EXIT.ok;
  }

  /** A skipped event (ProcessPrefix starts every vmcatcher run) is a good moment to drain the spool, if there is one. */
  private async replayOnly(config: Awaited<ReturnType<ConfiguredCommand['config']>>): Promise<void> {
    if (!(await spoolNeedsReplay(config.spool.folder))) return;
    try {
      await produceMessages(config, [], this.log, { spoolOnFailure: true });
    } catch (err) {
      this.log.warn({ reason: (err as Error).message }, 'spooled events stay spooled');
    }
  }
}
