export type { ResilienceErrorOptions } from './errors.js'
export { errors, InvalidArgumentError, isResilienceError, ResilienceError } from './errors.js'
