export type { SessionErrorOptions } from './errors.js'
export { errors, InvalidArgumentError, isSessionError, SessionError } from './errors.js'
