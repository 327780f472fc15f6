import { proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { SharedActivities } from '../activities/shared.js';
import { chosenCloud, SA_STAGE, type ExpireImageResult, type ImageRequest } from '../core/workflow-contract.js';

/** The expiry asks the cloud only: it runs on the shared queue, on any worker. */
const shared = proxyActivities<SharedActivities>({
  startToCloseTimeout: '10 minutes',
  // expireRegisteredImages heartbeats: a worker that dies while asking is noticed within this.
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 20 },
});

/**
 * vmcatcher expired an image (its list expired, it was withdrawn or replaced): make the images
 * registered for it private, or unregister them, as the site configured.
 */
export async function expireImage({ event, options }: ImageRequest): Promise<ExpireImageResult> {
  upsertSearchAttributes([{ key: SA_STAGE, value: 'expiring' }]);
  try {
    const cloud = chosenCloud(options);
    const summary = `make this revision's images ${cloud ? `on ${cloud} ` : ''}private or unregister them`;
    const result = await shared.expireRegisteredImages.executeWithOptions({ summary }, [{ event, options }]);
    upsertSearchAttributes([{ key: SA_STAGE, value: 'done' }]);
    return result;
  } catch (err) {
    upsertSearchAttributes([{ key: SA_STAGE, value: 'failed' }]);
    throw err;
  }
}
