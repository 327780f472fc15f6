import * as t from 'typanion';
import { DurationSchema } from '../core/config.js';

/**
 * Option validators shared by several commands. Kept apart from the commands themselves: a command
 * importing another command's module loads everything that one needs (the Temporal client, the
 * clouds), and every run of the command pays for it.
 */
export const isDuration = t.makeValidator<unknown, string>({
  test: (value, state): value is string => {
    if (typeof value === 'string' && DurationSchema.safeParse(value).success) return true;
    state?.errors?.push(`${state.p ?? 'value'}: expected a duration such as 3h or 90m (got ${String(value)})`);
    return false;
  },
});
