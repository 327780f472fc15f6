import path from 'node:path';
import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { registrationSite } from '../../clouds/index.js';
import { startWorkflowForEvent, type StartResult } from '../../core/starter.js';
import { connectTemporal, workflowUiLink } from '../../core/temporal-client.js';
import {
  assertActionable,
  EVENT_FIELDS,
  ImageEventSchema,
  InvalidEventError,
  type ImageEvent,
} from '../../core/event.js';
import { InvalidInputError } from '../../core/errors.js';
import type { ImageRevisionResult } from '../../core/workflow-contract.js';
import type { Config } from '../../core/config.js';
import { ConfiguredCommand, EXIT } from '../base-command.js';
import { followProgress, waitForChild } from '../progress.js';

export class RegisterNowCommand extends ConfiguredCommand {
  static override paths = [['register-now']];
  static override usage = Command.Usage({
    description: 'Register one image now: start the registerImage workflow and follow it',
    details:
      'Starts `registerImage` on the Temporal server for the image at `--url` (http, https, or a file: URL inside `security.allowedFileFolders`), prints the workflow id and its Web UI link, follows its progress, and exits 0 only when the image is registered. The workflow id derives from the image identity, so running the same command again joins the running workflow or finds the finished one and registers nothing twice.',
    examples: [
      ['Register a qcow2 image', '$0 register-now --url https://example.org/debian.qcow2 --kamaki-cloud mycloud'],
      [
        'The original spelling',
        '$0 register-now -url https://example.org/x.ova -kamaki-cloud occi-test -osfamily linux -users root',
      ],
      ['Start and return at once', '$0 register-now --url https://example.org/x.img --no-wait'],
    ],
  });

  url = Option.String('--url', { required: true, description: 'Where the image is (http, https or file URL)' });
  kamakiCloud = Option.String('--kamaki-cloud', {
    description: 'kamaki cloud name from ~/.kamakirc (default: synnefo.cloud)',
  });
  cloud = Option.String('--cloud', {
    description: 'With several `clouds` configured: the one to register into (default: every cloud of defaultClouds)',
  });
  osfamily = Option.String('--osfamily', { description: 'OSFAMILY property (default: synnefo.osfamily, "linux")' });
  users = Option.String('--users', { description: 'USERS property (default: synnefo.users, "root")' });
  format = Option.String('--format', { description: 'Format hint, used only when the content cannot tell' });
  insecureSsl = Option.Boolean('--insecure-ssl', false, {
    description: 'Do not verify the TLS certificate of the download',
  });
  credential = Option.String('--credential', {
    description:
      "Name of a credential in the worker's security.credentials to send with the download (default: security.credentialRules)",
  });
  sha512 = Option.String('--sha512', {
    description: 'Expected sha512 of the file at --url (checked while downloading)',
  });
  size = Option.String('--size', {
    validator: t.isNumber(),
    description: 'Expected size in bytes of the file at --url',
  });
  imageIdentifier = Option.String('--image-identifier', {
    description: 'Identifier of the image (default: the file name in --url)',
  });
  noWait = Option.Boolean('--no-wait', false, { description: 'Print the workflow id and return without waiting' });
  json = Option.Boolean('--json', false, { description: 'Print the result as JSON' });

  async run(): Promise<number> {
    const config = await this.config();
    const event = this.buildEvent();
    this.checkCredential(config);
    const { client, connection } = await connectTemporal(config.temporal);
    try {
      const options = {
        handler: 'registerImage' as const,
        cloud: this.cloud ?? this.kamakiCloud,
        insecureSsl: this.insecureSsl || undefined,
        osfamily: this.osfamily,
        users: this.users,
        formatHint: this.format,
        // Only the name travels (into the workflow history); the worker resolves the secret.
        credentialName: this.credential,
      };
      const started = await startWorkflowForEvent(client, config, event, options, registrationSite(config));
      if (started.outcome === 'ignored')
        return this.fail(
          'No configured cloud takes this image (the `vos` of every cloud it could go to leave its VO out)',
        );
      if (this.insecureSsl)
        this.log.warn({ url: this.url }, 'TLS certificate verification is OFF for this download (--insecure-ssl)');
      // One registration per cloud it goes to (several in a deployment of several `clouds`).
      const deliveries = started.deliveries ?? [started];
      for (const delivery of deliveries) {
        this.say.note(
          `Sent the image to workflow ${delivery.workflowId}; the registration is ${delivery.childWorkflowId}`,
        );
        this.say.note(`Web UI: ${workflowUiLink(config.temporal, delivery.workflowId!)}`);
      }
      if (this.noWait) {
        for (const delivery of deliveries)
          this.out(
            this.json
              ? JSON.stringify({
                  workflowId: delivery.workflowId,
                  registrationWorkflowId: delivery.childWorkflowId,
                  outcome: delivery.outcome,
                  link: workflowUiLink(config.temporal, delivery.workflowId!),
                })
              : delivery.workflowId!,
          );
        return EXIT.ok;
      }
      let failed = 0;
      for (const delivery of deliveries) if (!(await this.waitFor(config, delivery))) failed++;
      return failed === 0 ? EXIT.ok : EXIT.failed;
    } finally {
      await connection.close();
    }
  }

  /** Follows one registration to its end and says how it ended; false when it did not register the image. */
  private async waitFor(config: Config, delivery: StartResult): Promise<boolean> {
    const parent = delivery.handle as WorkflowHandle;
    const link = workflowUiLink(config.temporal, delivery.workflowId!);
    const registration = await waitForChild(parent, 'register');
    if (registration) await followProgress(registration, this.context.stderr);
    try {
      const result = (await parent.result()) as ImageRevisionResult;
      if (result.action !== 'register' || !result.register) {
        this.say.error(`The image was expired by a later event before it was registered; see ${link}`);
        return false;
      }
      const registered = result.register;
      if (this.json)
        this.out(
          JSON.stringify(
            { workflowId: delivery.workflowId, registrationWorkflowId: delivery.childWorkflowId, link, ...registered },
            null,
            2,
          ),
        );
      else if (registered.reused)
        this.out(`Image ${registered.imageId} (${registered.name ?? ''}) is already registered; nothing added`);
      else this.out(`Registered image ${registered.imageId} (${registered.name ?? ''}) from ${this.url}`);
      return true;
    } catch (err) {
      if (err instanceof WorkflowFailedError) {
        this.say.error(`Registration failed: ${rootCause(err)} (see ${link})`);
        return false;
      }
      throw err;
    }
  }

  private checkCredential(config: Config): void {
    if (this.credential === undefined) return;
    if (!/^[A-Za-z0-9_.-]+$/.test(this.credential)) {
      throw new InvalidInputError(
        `--credential '${this.credential}' is not a credential name (letters, digits, '_', '-', '.')`,
      );
    }
    // The worker resolves the name from its own configuration, which may differ from this one.
    if (!(this.credential in config.security.credentials)) {
      this.log.warn(
        { credential: this.credential },
        'this configuration does not define security.credentials.%s; the worker must',
        this.credential,
      );
    }
  }

  private buildEvent(): ImageEvent {
    let parsed: URL;
    try {
      parsed = new URL(this.url);
    } catch {
      throw new InvalidInputError(`--url '${this.url}' is not a valid URL`);
    }
    if (!['http:', 'https:', 'file:'].includes(parsed.protocol)) {
      throw new InvalidInputError(`--url must be an http, https or file URL, not ${parsed.protocol}`);
    }
    const fileName = decodeURIComponent(path.posix.basename(parsed.pathname)) || parsed.hostname;
    const result = ImageEventSchema.safeParse({
      origin: 'command',
      imageListId: 'register-now',
      imageId: this.imageIdentifier ?? fileName,
      title: fileName,
      uri: this.url,
      checksumSha512: this.sha512,
      size: this.size,
      format: this.format,
      os: this.osfamily,
    });
    if (!result.success) {
      const issue = result.error.issues[0];
      const option = { checksumSha512: '--sha512', size: '--size' }[String(issue.path[0])] ?? String(issue.path[0]);
      throw new InvalidInputError(`${option}: ${issue.message}`);
    }
    try {
      assertActionable(result.data);
    } catch (err) {
      if (err instanceof InvalidEventError && err.key === EVENT_FIELDS.uri)
        throw new InvalidInputError(err.message.replace(EVENT_FIELDS.uri, '--url'));
      throw err;
    }
    return result.data;
  }
}

function rootCause(err: unknown): string {
  let current = err as { message?: string; cause?: unknown } | undefined;
  let message = current?.message ?? String(err);
  while (current?.cause) {
    current = current.cause as { message?: string; cause?: unknown };
    if (current?.message) message = current.message;
  }
  return message;
}
