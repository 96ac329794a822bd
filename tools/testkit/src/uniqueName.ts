import { randomBytes } from 'node:crypto'

// pid + random: unique across the parallel vitest workers and across runs
const PROCESS_TAG = `${process.pid.toString(36)}${randomBytes(3).toString('hex')}`
let counter = 0

/** Longest label part kept in a {@link uniqueName}. */
const MAX_LABEL = 32

/**
 * A name unique to this call, process and run, made of lower-case letters, digits and
 * underscores, starting with a letter, at most 50 characters: safe as a Redis key prefix,
 * a MySQL identifier (<= 64) and a RabbitMQ queue or exchange name.
 *
 * @example
 * ```ts
 * uniqueName('cache tags') // 'cache_tags_1k2x3f9c2a_1'
 * ```
 */
export function uniqueName(label = 't'): string {
  let base = String(label)
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, MAX_LABEL)
    .replace(/_+$/, '')
  if (base.length === 0) base = 't'
  else if (!/^[a-z]/.test(base)) base = `t_${base}`.slice(0, MAX_LABEL)
  counter += 1
  return `${base}_${PROCESS_TAG}_${counter.toString(36)}`
}
