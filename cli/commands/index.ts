import { deadLettersCommands } from './dead-letters.js';
import { DequeueCommand } from './dequeue.js';
import { DoctorCommand } from './doctor.js';
import { DrainQueueCommand } from './drain-queue.js';
import { EnqueueFromEnvCommand } from './enqueue-from-env.js';
import { EnqueueFromImageListCommand } from './enqueue-from-image-list.js';
import { GetImageListCommand } from './get-image-list.js';
import { ParseImageListCommand } from './parse-image-list.js';
import { RegisterNowCommand } from './register-now.js';
import { registrationsCommands } from './registrations.js';
import { RunCommand } from './run.js';
import {
  SubscribeCommand,
  SubscriptionsApplyCommand,
  SubscriptionsCommand,
  SubscriptionsMissingCommand,
  SyncNowCommand,
  UnsubscribeCommand,
} from './subscriptions.js';
import { ShowConfCommand } from './show-conf.js';
import { ShowEnvCommand } from './show-env.js';
import { TestQueueCommand } from './test-queue.js';
import { TransformCommand } from './transform.js';
import { UsageCommand } from './usage.js';
import { WorkerCommand } from './worker.js';

/** Every command, in the original's order where it has one. */
export const commands = [
  UsageCommand,
  ShowEnvCommand,
  ShowConfCommand,
  EnqueueFromEnvCommand,
  EnqueueFromImageListCommand,
  DequeueCommand,
  TestQueueCommand,
  RegisterNowCommand,
  ParseImageListCommand,
  GetImageListCommand,
  DrainQueueCommand,
  TransformCommand,
  WorkerCommand,
  RunCommand,
  ...registrationsCommands,
  SubscriptionsCommand,
  SubscriptionsApplyCommand,
  SubscriptionsMissingCommand,
  SubscribeCommand,
  UnsubscribeCommand,
  SyncNowCommand,
  ...deadLettersCommands,
  DoctorCommand,
];
