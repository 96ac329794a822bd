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

/** Errors of a Cluster node that does not serve the key (now): the pipeline went to the wrong node. */
const REDIRECTED = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /

/** How many times a pipeline sent to a node that no longer serves the key is sent again. */
const MAX_REDIRECTIONS = 8

/**
 * `script` then `WAIT <replicas> <timeout>` in one pipeline: one round trip, on the connection
 * that ran the script. WAIT counts the replicas that acknowledged every write this connection
 * made so far, so it must follow the script on the same connection: on a Cluster the
 * pipeline goes to the node that serves the script's key (WAIT has no key of its own), the
 * master the write reached. Resolves with the script's reply and the count of replicas.
 *
 * ioredis follows a redirection (`MOVED` after a failover, a slots table not loaded yet) for
 * a pipeline only when every command in it failed alike; here WAIT succeeds on the wrong node
 * while the script is redirected. So a redirected script is followed here: one keyed command
 * on the key through the client's own routing (which follows the redirection and updates the
 * client's slots table), then the pipeline again, to the node that serves the key now.
 */
export async function runAndWait(
  script: LuaScript,
  redis: RedisLike,
  keys: readonly string[],
  args: readonly (string | number)[],
  replicas: number,
  timeout: number,
): Promise<[reply: unknown, replicas: number]> {
  let load = false
  for (let attempt = 0; ; attempt++) {
    const pipeline = redis.pipeline()
    if (load) pipeline.eval(script.source, keys.length, ...keys, ...args)
    else pipeline.evalsha(script.sha, keys.length, ...keys, ...args)
    pipeline.call('WAIT', replicas, timeout)
    const results = (await pipeline.exec()) ?? []
    const [scriptError, reply] = results[0] ?? [new Error('the pipeline returned nothing'), null]
    if (scriptError) {
      const message = scriptError.message
      if (!load && message.startsWith('NOSCRIPT')) {
        load = true
        continue
      }
      if (REDIRECTED.test(message) && attempt < MAX_REDIRECTIONS && keys[0] !== undefined) {
        await redis.exists(keys[0]) // routes, and on MOVED updates the slots table
        continue
      }
      throw scriptError
    }
    const [waitError, acknowledged] = results[1] ?? [new Error('WAIT returned nothing'), null]
    if (waitError) throw waitError
    return [reply, Number(acknowledged)]
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
