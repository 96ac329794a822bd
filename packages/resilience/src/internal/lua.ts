import { createHash } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'

/** A client the package accepts: an ioredis `Redis` or `Cluster`. */
export type RedisLike = Redis | Cluster

/**
 * A Lua script run with EVALSHA (one round trip), loaded with EVAL on the first NOSCRIPT
 * (a fresh server, a failover, a cluster node that never saw it). The user's client is used
 * as given: nothing is defined on it.
 */
export class LuaScript {
  readonly source: string
  readonly sha: string

  constructor(source: string) {
    this.source = source
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  run(
    redis: RedisLike,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    return redis.evalsha(this.sha, keys.length, ...keys, ...args).catch((error: unknown) => {
      if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
        return redis.eval(this.source, keys.length, ...keys, ...args)
      }
      throw error
    })
  }
}

/** Whether a value is an ioredis client (duck-typed, so two copies of ioredis both pass). */
export function isRedisLike(value: unknown): value is RedisLike {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { evalsha?: unknown }).evalsha === 'function' &&
    typeof (value as { eval?: unknown }).eval === 'function'
  )
}

/** Rejects with `onTimeout()` if `promise` has not settled within `ms`. */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms)
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}
