export { type Duration, parseDuration } from './duration.js'
export { Emitter, type Listener, type Unsubscribe } from './emitter.js'
export { merge, show } from './options.js'
export { type CheckKind, type Checks, checks, type InvalidArgumentErrorClass } from './validate.js'
