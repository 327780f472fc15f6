import type { CommandClass } from 'clipanion';
import type { CliContext } from '../context.js';

type Commands = Array<CommandClass<CliContext>>;

/**
 * Every command, in the original's order where it has one, by the module that holds it and the
 * first word of its paths. A command line loads only the module its first word names: what a
 * module imports (the Temporal worker's native bridge, the Temporal client, the image pipeline)
 * costs seconds of start-up, which `subscriptions` or a vmcatcher hook line must not pay for
 * `worker`'s sake. `--help`, `usage` and anything unknown load them all.
 */
const modules: ReadonlyArray<{ words: readonly string[]; load: () => Promise<Commands>; listsAll?: true }> = [
  // `usage` prints every command.
  { words: ['usage'], load: async () => [(await import('./usage.js')).UsageCommand], listsAll: true },
  { words: ['show-env'], load: async () => [(await import('./show-env.js')).ShowEnvCommand] },
  { words: ['show-conf'], load: async () => [(await import('./show-conf.js')).ShowConfCommand] },
  { words: ['enqueue-from-env'], load: async () => [(await import('./enqueue-from-env.js')).EnqueueFromEnvCommand] },
  {
    words: ['enqueue-from-image-list'],
    load: async () => [(await import('./enqueue-from-image-list.js')).EnqueueFromImageListCommand],
  },
  { words: ['dequeue'], load: async () => [(await import('./dequeue.js')).DequeueCommand] },
  { words: ['test-queue'], load: async () => [(await import('./test-queue.js')).TestQueueCommand] },
  { words: ['register-now'], load: async () => [(await import('./register-now.js')).RegisterNowCommand] },
  { words: ['parse-image-list'], load: async () => [(await import('./parse-image-list.js')).ParseImageListCommand] },
  { words: ['get-image-list'], load: async () => [(await import('./get-image-list.js')).GetImageListCommand] },
  { words: ['drain-queue'], load: async () => [(await import('./drain-queue.js')).DrainQueueCommand] },
  { words: ['transform'], load: async () => [(await import('./transform.js')).TransformCommand] },
  { words: ['worker'], load: async () => [(await import('./worker.js')).WorkerCommand] },
  { words: ['run'], load: async () => [(await import('./run.js')).RunCommand] },
  { words: ['registrations'], load: async () => (await import('./registrations.js')).registrationsCommands },
  {
    words: ['subscriptions', 'subscribe', 'unsubscribe', 'sync-now'],
    load: async () => {
      const m = await import('./subscriptions.js');
      return [
        m.SubscriptionsCommand,
        m.SubscriptionsApplyCommand,
        m.SubscriptionsMissingCommand,
        m.SubscribeCommand,
        m.UnsubscribeCommand,
        m.SyncNowCommand,
      ];
    },
  },
  { words: ['dead-letters'], load: async () => (await import('./dead-letters.js')).deadLettersCommands },
  { words: ['doctor'], load: async () => [(await import('./doctor.js')).DoctorCommand] },
];

/** The first words of every command's paths, as the module table declares them. */
export const commandWords: readonly string[] = modules.flatMap((m) => m.words);

/**
 * The commands a command line may run: only its module's when its first word names one, every
 * command otherwise (help, usage errors and their suggestions need them all).
 */
export async function commandsFor(argv: readonly string[]): Promise<Commands> {
  const named = modules.find((m) => argv.length > 0 && m.words.includes(argv[0]!));
  if (named && !named.listsAll) return named.load();
  // One after another: loading is CPU-bound anyway, and jest's ESM loader fails on concurrent imports.
  const all: Commands = [];
  for (const m of modules) all.push(...(await m.load()));
  return all;
}
