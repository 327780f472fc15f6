/**
 * The sources of subscriptions behind one choice (subscriptions/sources.ts): a spec finds its
 * source, every configured subscription of every source gets its schedule, and the schedule ids
 * and the registration options are the ones the schedules already made on a site carry.
 */
import { parseConfig } from '../../core/config.js';
import { invalidEntriesKept, shortDigest } from '../../core/workflow-contract.js';
import { registryScheduleId } from '../../oci/subscription-source.js';
import type { ScheduleExecutionResult } from '@temporalio/client';
import {
  firstNewRun,
  scheduleIdForUrl,
  subscriptionScheduleId,
  syncWorkflowIdPrefix,
} from '../../subscriptions/schedules.js';
import { configuredSubscriptions, sourceOf } from '../../subscriptions/sources.js';

const config = parseConfig(
  {
    security: { credentials: { egi: 'user:secret', lists: 'token' } },
    subscriptions: [
      { url: 'https://lists.example.org/vo/list.json', credential: 'lists', cloud: 'c1', paused: true },
      { registry: 'https://registry.egi.eu', project: 'egi_vm_images', credential: 'egi', cloud: 'c2' },
    ],
  },
  'test',
);

test('every configured subscription of every source is wanted, with its spec and its paused state', () => {
  const wanted = configuredSubscriptions(config, 'config');
  expect(wanted.map(({ spec, paused }) => [spec.url, spec.source, paused])).toEqual([
    ['https://lists.example.org/vo/list.json', undefined, true],
    ['https://registry.egi.eu/egi_vm_images', 'registry', false],
  ]);
});

test('a spec finds its source by its name; a list names none; an unknown name is refused', () => {
  const [list, project] = configuredSubscriptions(config, 'config').map((w) => w.spec);
  expect(sourceOf(list!).describe(list!)).toMatchObject({
    summary: `Sync of the image list ${list!.url}`,
    pinsListId: true,
  });
  expect(sourceOf(project!).describe(project!)).toMatchObject({
    summary: `Sync of the registry project ${project!.url}`,
    label: 'registry',
    pinsListId: false,
  });
  expect(() => sourceOf({ url: 'https://x.example/y', source: 'ftp' })).toThrow(
    /names a source this worker does not know: ftp/,
  );
});

test('schedule ids and sync workflow ids are the ones existing schedules carry: <source:><host_path>:<digest of the key>', () => {
  const [list, project] = configuredSubscriptions(config, 'config').map((w) => w.spec);
  const listId = `subscription:lists.example.org_vo_list.json:${shortDigest('https://lists.example.org/vo/list.json')}`;
  const projectId = `subscription:registry:registry.egi.eu_egi_vm_images:${shortDigest('https://registry.egi.eu/egi_vm_images')}`;
  expect(subscriptionScheduleId('https://lists.example.org/vo/list.json')).toBe(listId);
  expect(registryScheduleId({ registry: 'https://registry.egi.eu/', project: 'egi_vm_images' })).toBe(projectId);
  expect(scheduleIdForUrl(config, 'https://registry.egi.eu/egi_vm_images/')).toBe(projectId);
  expect(scheduleIdForUrl(config, 'https://lists.example.org/vo/list.json')).toBe(listId);
  expect(syncWorkflowIdPrefix(list!)).toBe(`sync:${listId.slice('subscription:'.length)}`);
  expect(syncWorkflowIdPrefix(project!)).toBe(`sync:${projectId.slice('subscription:'.length)}`);
});

test('an invalid entry keeps its image; one without an identifier makes the read incomplete', () => {
  expect(invalidEntriesKept([{ identifier: 'a', problem: 'no hv:uri' }, { problem: 'no dc:identifier' }])).toEqual({
    unread: [
      { imageId: 'a', problem: 'invalid entry: no hv:uri' },
      { imageId: '(entry without dc:identifier)', problem: 'the read is incomplete: nothing expired as removed' },
    ],
    keep: ['a'],
    incomplete: true,
  });
});

test('the run a trigger started is found by its run id: two triggers in one second start two runs of one workflow id', () => {
  // The server names a triggered run `<the action's workflow id>-<the second of the trigger>`.
  const action = (workflowId: string, firstExecutionRunId: string): ScheduleExecutionResult => ({
    scheduledAt: new Date('2026-12-08T00:19:30Z'),
    takenAt: new Date('2026-12-08T00:19:30Z'),
    action: { type: 'startWorkflow', workflow: { workflowId, firstExecutionRunId } },
  });
  const sameSecond = 'sync:localhost_38833_a.list:4a5a56df83fe5eac-2026-12-08T00:19:30Z';
  const earlier = [action('sync:localhost_38833_a.list:4a5a56df83fe5eac-2026-12-08T00:19:10Z', 'run-0')];
  const before = [...earlier, action(sameSecond, 'run-1')];
  expect(firstNewRun(before, before)).toBeUndefined();
  expect(firstNewRun(before, [...before, action(sameSecond, 'run-2')])).toEqual({
    workflowId: sameSecond,
    firstExecutionRunId: 'run-2',
  });
  // Temporal keeps the last ten actions: an old one dropped from the list is not a new run.
  expect(firstNewRun(before, [before[1]!, action(sameSecond, 'run-2')])?.firstExecutionRunId).toBe('run-2');
});
