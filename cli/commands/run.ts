import { Command } from 'clipanion';
import { startBridge } from '../../bridge/consumer.js';
import { ConfiguredCommand } from '../base-command.js';
import { untilSignal } from '../signals.js';

export class RunCommand extends ConfiguredCommand {
  static override paths = [['run']];
  static override usage = Command.Usage({
    description: 'Run the worker and the AMQP bridge together in one process (the embedded default)',
    details:
      'What the local stack runs. In production the two may run as separate processes (`worker` on every image host, `dequeue --server` where the broker is), with the same configuration. SIGTERM or SIGINT stops the bridge first (no new workflows), then the worker (running steps finish).',
    examples: [['Run the service', '$0 run --conf /etc/snf-vmcatcher/application.conf']],
  });

  async run(): Promise<number> {
    const config = await this.config();
    // Loaded here, not at the top: the worker SDK's native bridge costs every other command ~0.4 s.
    const { startWorker } = await import('../../worker/worker.js');
    const worker = await startWorker({ config, logger: this.log.child({ part: 'worker' }) });
    let bridge;
    try {
      bridge = await startBridge({ config, logger: this.log.child({ part: 'bridge' }) });
    } catch (err) {
      worker.stop();
      await worker.done;
      throw err;
    }
    const running = bridge;
    await untilSignal(
      Promise.all([worker.done, running.done]),
      async () => {
        await running.stop();
        worker.stop();
      },
      this.log,
    );
    return 0;
  }
}
