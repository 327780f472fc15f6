import { Command } from 'clipanion';
import { openBroker } from '../../bridge/broker.js';
import { eventFromMessageBody, eventToFlat } from '../../core/event.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

export class DrainQueueCommand extends ConfiguredCommand {
  static override paths = [['drain-queue']];
  static override usage = Command.Usage({
    description: 'Remove every message from the queue and print how many were removed',
    details:
      'Each message is acked (removed) first, then logged as an event when it parses. The dead-letter queue is left alone.',
    examples: [['Empty the queue', '$0 drain-queue --conf /etc/snf-vmcatcher/application.conf']],
  });

  async run(): Promise<number> {
    const config = await this.config();
    const session = await openBroker(config.rabbitmq);
    let drained = 0;
    try {
      for (;;) {
        const msg = await session.channel.get(config.rabbitmq.queue, { noAck: false });
        if (msg === false) break;
        session.channel.ack(msg);
        const index = drained++;
        try {
          this.log.info({ index, event: eventToFlat(eventFromMessageBody(msg.content)) }, `Drained event ${index}`);
        } catch (err) {
          this.log.warn(`Error converting drained event ${index} to appropriate format: ${(err as Error).message}`);
        }
      }
      // Close the channel before the connection, so every ack reaches the broker first.
      await session.channel.close();
    } finally {
      await session.close();
    }
    this.out(`Drained ${drained} messages`);
    return EXIT.ok;
  }
}
