import type { ActivityInterfaceFor } from '@temporalio/workflow';
import type { ControlActivities } from '../../activities/control.js';
import type { HostActivities } from '../../activities/host.js';
import type { SharedActivities } from '../../activities/shared.js';
import { buildActivities } from '../../worker/activities.js';
import { HostSlots } from '../../worker/host-slots.js';
import { pipelineConfig, quietLogger } from '../support/pipeline-fixtures.js';

/**
 * What a workflow's proxy of one queue offers is what that queue's worker runs. `npm run
 * typecheck` checks the @ts-expect-error lines: an activity called through another queue's proxy
 * does not compile.
 */
export function callsThroughTheWrongQueue(
  shared: ActivityInterfaceFor<SharedActivities>,
  host: ActivityInterfaceFor<HostActivities>,
  control: ActivityInterfaceFor<ControlActivities>,
) {
  return [
    // @ts-expect-error findRegisteredImage runs on the shared queue, not on a host's
    host.findRegisteredImage,
    // @ts-expect-error acquireImage needs the host that holds the files
    shared.acquireImage,
    // @ts-expect-error slots are the control queue's
    host.acquireHostSlot,
    // @ts-expect-error the clean-up runs where the work folder is
    control.cleanupWorkspace,
  ];
}

test('the worker registers every activity on exactly one queue, the one its factory names', () => {
  const activities = buildActivities(pipelineConfig('/nonexistent'), quietLogger, new HostSlots(1), () =>
    Promise.reject(new Error('no Temporal in this test')),
  );
  const names = (queue: object) => Object.keys(queue).sort();
  expect(names(activities.shared)).toEqual([
    'claimHost',
    'cloudInventory',
    'deliverImageEvents',
    'expireRegisteredImages',
    'findRegisteredImage',
    'logEvent',
    'readSubscribedList',
    'readSubscribedRegistry',
    'readSubscription',
    'syncSubscription',
    'throwOnPurpose',
  ]);
  expect(names(activities.host)).toEqual([
    'acquireImage',
    'cleanupWorkspace',
    'convertToRaw',
    'inspectImage',
    'prepareImage',
    'registerWithKamaki',
  ]);
  expect(names(activities.control)).toEqual(['acquireHostSlot', 'releaseHostSlot']);
});
