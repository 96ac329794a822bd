export { merge, show } from './options.js'
