import { proxyActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { createSynnefoActivities } from '../activities/synnefo.js';
import { SA_STAGE, type ExpireImageInput, type ExpireImageResult } from '../core/workflow-contract.js';

type SynnefoActivities = ReturnType<typeof createSynnefoActivities>;

const synnefo = proxyActivities<Pick<SynnefoActivities, 'expireRegisteredImages'>>({
  startToCloseTimeout: '10 minutes',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 20 },
});

/**
 * vmcatcher expired an image (its list expired, it was withdrawn or replaced): make the images
 * registered for it private, or unregister them, as the site configured.
 */
export async function expireImage({ event, options }: ExpireImageInput): Promise<ExpireImageResult> {
  upsertSearchAttributes([{ key: SA_STAGE, value: 'expiring' }]);
  try {
    const result = await synnefo.expireRegisteredImages({ event, options });
    upsertSearchAttributes([{ key: SA_STAGE, value: 'done' }]);
    return result;
  } catch (err) {
    upsertSearchAttributes([{ key: SA_STAGE, value: 'failed' }]);
    throw err;
  }
}
