import { Command, Option } from 'clipanion';
import { produceMessages } from '../../bridge/producer.js';
import { serialiseEvent } from '../../bridge/publisher.js';
import { claimListIdForUrl } from '../../image-lists/list-ids.js';
import { imageToEvent } from '../../image-lists/parse.js';
import { EXIT } from '../base-command.js';
import { ImageListCommand } from '../image-list-command.js';
import { reportInvalid } from './parse-image-list.js';

export class EnqueueFromImageListCommand extends ImageListCommand {
  static override paths = [['enqueue-from-image-list']];
  static override usage = Command.Usage({
    description: 'Read an image list and publish one event per image to RabbitMQ',
    details: `
      The list is fetched, verified (security.signaturePolicy; the signer must be an authorised
      endorser, security.endorsers or the list's entry in subscriptions) and parsed; each valid image
      becomes one message, in list order. Events spooled by an earlier enqueue-from-env are
      published first. An expired list, or one dated in the future, is refused. A URL speaks for
      one list id: its subscription's listId, else the first one enqueued from it (kept in
      <worker.workingFolder>/list-ids.json); a list carrying another id, or an id another
      subscription or URL owns, is refused.
    `,
    examples: [
      [
        'Enqueue every image of a VO list',
        '$0 enqueue-from-image-list --conf /etc/snf-vmcatcher/application.conf --image-list-url https://vmcaster.appdb.egi.eu/store/vo/fedcloud.egi.eu/image.list --token-file /etc/snf-vmcatcher/appdb.token',
      ],
      [
        'Enqueue one image (original spelling)',
        '$0 enqueue-from-image-list -conf app.conf -image-list-url file:///srv/lists/image.list -image-identifier c0482bc2-bf41-5d49-aaaa-a750174a186b',
      ],
    ],
  });

  imageIdentifier = Option.String('--image-identifier', {
    description: 'Enqueue only the image with this dc:identifier (exact match)',
  });

  async run(): Promise<number> {
    const read = await this.readList();
    reportInvalid(read, this.say);
    const { list } = read;
    if (list.images.length === 0) {
      return this.fail('Could not parse events from image list');
    }
    if (list.expired || list.createdInFuture) {
      return this.fail(
        `Image list ${list.identifier} is ${list.expired ? `expired (dc:date:expires ${list.expires})` : `dated in the future (dc:date:created ${list.created})`}; nothing enqueued`,
      );
    }
    const config = await this.config();
    // An endorser is authorised for a URL: it speaks for the list id configured for it, or first enqueued from it.
    const claimed = await claimListIdForUrl(config, this.imageListUrl, list.identifier);
    if (claimed) return this.fail(`Image list ${read.url} refused: ${claimed}; nothing enqueued`);
    this.say.note(`Parsed image list dc:identifier = ${list.identifier}`);
    const images =
      this.imageIdentifier === undefined
        ? list.images
        : list.images.filter((i) => i.identifier === this.imageIdentifier);
    if (images.length === 0) {
      this.say.note(`Available identifiers are: ${list.images.map((i) => i.identifier).join(', ')}`);
      return this.fail(`Image identifier ${this.imageIdentifier} not found`, EXIT.usage);
    }
    this.say.note(`Matched ${images.length} event(s)`);
    const events = images.map((image) => imageToEvent(list, image));
    const result = await produceMessages(config, events.map(serialiseEvent), this.log, {
      spoolOnFailure: false,
      beforePublish: (i) =>
        this.say.note(
          `Enqueueing event for dc:identifier = ${events[i].imageId}, hv:uri = ${events[i].uri ?? ''}, ad:mpuri = ${events[i].mpUri ?? ''}`,
        ),
      onPublished: (i, message) =>
        this.log.debug({ imageId: events[i].imageId, messageId: message.messageId }, 'event published'),
    });
    if (result.replay?.published) this.say.note(`Published ${result.replay.published} spooled event(s) first`);
    this.say.note(`Enqueued ${result.published} event(s)`);
    return EXIT.ok;
  }
}
