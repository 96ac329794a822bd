export type { ShardingErrorOptions } from './errors.js'
export { errors, InvalidArgumentError, isShardingError, ShardingError } from './errors.js'
