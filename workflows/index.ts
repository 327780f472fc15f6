export { registerImage, progressQuery } from './register-image.js';
export { expireImage } from './expire-image.js';
