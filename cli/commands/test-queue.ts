import { Command } from 'clipanion';
import { openBroker } from '../../bridge/broker.js';
import { BrokerError } from '../../core/errors.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';

export class TestQueueCommand extends ConfiguredCommand {
  static override paths = [['test-queue']];
  static override usage = Command.Usage({
    description: 'Connect to RabbitMQ, declare the exchange, queues and binding, and disconnect',
    details: 'Exits 0 when the broker answers and the topology is declared, 1 when it does not.',
    examples: [['Check the broker settings', '$0 test-queue --conf /etc/snf-vmcatcher/application.conf']],
  });

  async run(): Promise<number> {
    const { config } = await this.loadedConfig();
    try {
      const session = await openBroker(config.rabbitmq);
      await session.close();
      this.out(
        `Successfully connected to queue using ${this.configName} (${session.server}, queue '${config.rabbitmq.queue}')`,
      );
      return EXIT.ok;
    } catch (err) {
      if (err instanceof BrokerError) {
        return this.fail(`Could not connect to queue using ${this.configName}: ${err.message}`);
      }
      throw err;
    }
  }
}
