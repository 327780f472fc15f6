import { handlerFromName } from '../../core/handlers.js';
import { InvalidInputError } from '../../core/errors.js';

describe('handlerFromName maps the original -handler values to workflow handlers', () => {
  test.each([
    ['gr.grnet.egi.vmcatcher.image.handler.SynnefoVMRegistrationHandler', 'registerImage'],
    ['gr.grnet.egi.vmcatcher.image.handler.JustLogHandler', 'JustLogHandler'],
    ['gr.grnet.egi.vmcatcher.image.handler.ThrowingHandler', 'ThrowingHandler'],
    ['SynnefoVMRegistrationHandler', 'registerImage'],
    ['JustLogHandler', 'JustLogHandler'],
    ['ThrowingHandler', 'ThrowingHandler'],
    ['registerImage', 'registerImage'],
    ['register-image', 'registerImage'],
    ['just-log', 'JustLogHandler'],
    ['throwing', 'ThrowingHandler'],
    ['  justloghandler ', 'JustLogHandler'],
  ])('%s → %s', (name, expected) => {
    expect(handlerFromName(name)).toBe(expected);
  });

  test.each([
    ['gr.grnet.egi.vmcatcher.image.handler.NoSuchHandler'],
    ['com.example.JustLogHandler'],
    [''],
    ['Synnefo'],
  ])('rejects %p with a message naming --handler', (name) => {
    expect(() => handlerFromName(name)).toThrow(InvalidInputError);
    expect(() => handlerFromName(name)).toThrow(/--handler/);
  });
});
