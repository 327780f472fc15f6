import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { activityContext } from '../../runtime/context.js';
import { classifyFailures } from '../../worker/failures.js';

/**
 * An activity context as the worker gives one: errors leave through the worker's interceptor, so
 * they arrive classified (retryable or not, typed) as a workflow would see them.
 */
export function workerActivityEnv(info?: Partial<Info>): MockActivityEnvironment {
  // The SDK's own "Activity failed" warnings would only repeat what the tests assert.
  return new MockActivityEnvironment(info, { interceptors: [classifyFailures], logger: new DefaultLogger('ERROR') });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any activity's own parameter types
type Activities = Record<string, (...args: any[]) => Promise<unknown>>;

/**
 * `activities`, each call run as the worker runs it: in an activity context of its own, through
 * the worker's interceptor. Called inside a context a test made (`workerActivityEnv(info).run`,
 * to see heartbeats or give a retry's details), a call runs in that one.
 */
export function asRunByWorker<T extends Activities>(activities: T): T {
  return Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [
      name,
      (...args: unknown[]) => (activityContext() ? fn(...args) : workerActivityEnv().run(fn, ...args)),
    ]),
  ) as T;
}
