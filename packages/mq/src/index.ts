export type { MqErrorOptions } from './errors.js'
export { errors, InvalidArgumentError, isMqError, MqError } from './errors.js'
