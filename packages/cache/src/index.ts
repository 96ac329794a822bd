export type { CacheErrorOptions } from './errors.js'
export { CacheError, errors, InvalidArgumentError, isCacheError } from './errors.js'
