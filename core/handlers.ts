import { InvalidInputError } from './errors.js';
import { HANDLERS, type HandlerName } from './workflow-contract.js';

/** The package of the original's handler classes (`-handler gr.grnet.egi.vmcatcher.image.handler.X`). */
const ORIGINAL_HANDLER_PACKAGE = 'gr.grnet.egi.vmcatcher.image.handler';

/**
 * Every spelling a site may have in its scripts → the handler the workflow runs. The
 * original took a fully qualified class name; its short class names and our own names
 * (plus kebab-case forms) are accepted too.
 */
const HANDLER_ALIASES: Readonly<Record<string, HandlerName>> = {
  synnefovmregistrationhandler: 'registerImage',
  registerimage: 'registerImage',
  'register-image': 'registerImage',
  register: 'registerImage',
  justloghandler: 'JustLogHandler',
  'just-log': 'JustLogHandler',
  justlog: 'JustLogHandler',
  throwinghandler: 'ThrowingHandler',
  throwing: 'ThrowingHandler',
};

/**
 * Maps a `--handler` value to a HandlerName. Throws InvalidInputError naming the option
 * when the value is not a known handler (the original failed with "Could not instantiate
 * DequeueHandler class <name>").
 */
export function handlerFromName(name: string): HandlerName {
  const trimmed = name.trim();
  const short = trimmed.startsWith(`${ORIGINAL_HANDLER_PACKAGE}.`)
    ? trimmed.slice(ORIGINAL_HANDLER_PACKAGE.length + 1)
    : trimmed;
  const handler = HANDLER_ALIASES[short.toLowerCase()];
  if (!handler) {
    throw new InvalidInputError(
      `--handler '${name}' is not a known handler (expected one of ${HANDLERS.join(', ')}, or the original ` +
        `${ORIGINAL_HANDLER_PACKAGE}.SynnefoVMRegistrationHandler, .JustLogHandler, .ThrowingHandler)`,
    );
  }
  return handler;
}
