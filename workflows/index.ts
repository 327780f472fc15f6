export { registerImage, progressQuery } from './register-image.js';
export { expireImage } from './expire-image.js';
export { imageRevision, imageEventSignal, currentQuery } from './image-revision.js';
export { syncImageList } from './sync-image-list.js';
