import { Command } from 'clipanion';
import { ConfiguredCommand } from '../base-command.js';
import { untilSignal } from '../signals.js';

export class WorkerCommand extends ConfiguredCommand {
  static override paths = [['worker']];
  static override usage = Command.Usage({
    description: 'Run a Temporal worker: the registration workflows and their activities',
    details:
      "Polls the shared task queue (`temporal.taskQueue`) and this host's own queue (`worker.hostTaskQueue`, default `<taskQueue>-<hostname>`), on which every step that touches an image file runs. SIGTERM or SIGINT stops taking new tasks and lets running steps finish for `worker.shutdownGraceMs`.",
    examples: [['Run a worker', '$0 worker --conf /etc/snf-vmcatcher/application.conf']],
  });

  async run(): Promise<number> {
    const config = await this.config();
    // Loaded here, not at the top: the worker SDK's native bridge costs every other command ~0.4 s.
    const { startWorker } = await import('../../worker/worker.js');
    const worker = await startWorker({ config, logger: this.log });
    await untilSignal(worker.done, () => worker.stop(), this.log);
    return 0;
  }
}
