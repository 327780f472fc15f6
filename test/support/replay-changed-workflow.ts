import { proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import { SA_STAGE, type ExpireImageResult, type ImageRequest } from '../../core/workflow-contract.js';

/**
 * workflows/expire-image.ts as a careless change would leave it: its one step renamed (another
 * activity type where the recorded one was). Workflows started before such a change cannot replay
 * through it; test/unit/workflow-replay.test.ts shows that the recorded histories catch it.
 */
const shared = proxyActivities<{ makeImagesPrivate(input: ImageRequest): Promise<ExpireImageResult> }>({
  startToCloseTimeout: '10 minutes',
});

export async function expireImage(input: ImageRequest): Promise<ExpireImageResult> {
  upsertSearchAttributes([{ key: SA_STAGE, value: 'expiring' }]);
  const result = await shared.makeImagesPrivate(input);
  upsertSearchAttributes([{ key: SA_STAGE, value: 'done' }]);
  return result;
}
