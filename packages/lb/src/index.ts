export type { LbErrorOptions } from './errors.js'
export { errors, InvalidArgumentError, isLbError, LbError } from './errors.js'
