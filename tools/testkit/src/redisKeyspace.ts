import { uniqueName } from './uniqueName.js'

/**
 * The part of an ioredis `Redis` or `Cluster` that {@link redisKeyspace} uses; both satisfy
 * it, whatever copy of ioredis they come from.
 */
export interface RedisKeyspaceClient {
  /** Sends a raw command. */
  call(command: string, ...args: (string | number)[]): Promise<unknown>
  /** `true` on an ioredis `Cluster`. */
  readonly isCluster?: boolean
  /** The client's options; `keyPrefix` is honoured. */
  readonly options?: object
  /** The cluster's nodes by role (ioredis `Cluster` only). */
  nodes?(role: 'master'): RedisKeyspaceClient[]
}

/** A key prefix of one's own on a shared Redis, and a way to delete everything under it. */
export interface RedisKeyspace {
  /**
   * The prefix, ending in `:`, e.g. `cache_1k2x3f9c2a_1:`. Keys are `prefix + name` as the
   * client sees them: a client `keyPrefix` goes in front, as ioredis puts it.
   */
  readonly prefix: string
  /** `prefix + name`. */
  key(name: string): string
  /** Deletes (UNLINK) every key under the prefix, on every master of a cluster. Returns how many. */
  cleanup(): Promise<number>
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}

function keyPrefixOf(client: RedisKeyspaceClient): string {
  const prefix = (client.options as { keyPrefix?: unknown } | undefined)?.keyPrefix
  return typeof prefix === 'string' ? prefix : ''
}

async function unlinkUnder(node: RedisKeyspaceClient, pattern: string, oneKeyAtATime: boolean) {
  // SCAN MATCH sees whole key names, UNLINK gets the node's keyPrefix added: strip it
  const nodePrefix = keyPrefixOf(node)
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = (await node.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)) as [
      string,
      string[],
    ]
    cursor = String(next)
    const names = keys
      .filter((key) => key.startsWith(nodePrefix))
      .map((key) => key.slice(nodePrefix.length))
    if (names.length === 0) continue
    if (oneKeyAtATime) {
      // keys on one cluster node still live in different slots: no multi-key UNLINK
      const counts = await Promise.all(
        names.map((name) => node.call('UNLINK', name).catch(() => 0)),
      )
      for (const count of counts) deleted += Number(count)
    } else {
      deleted += Number(await node.call('UNLINK', ...names))
    }
  } while (cursor !== '0')
  return deleted
}

/**
 * Gives a test file a key prefix of its own on a shared Redis (or Redis Cluster) and deletes
 * every key under it on `cleanup()`, with SCAN and UNLINK (never FLUSHDB).
 *
 * @example
 * ```ts
 * const space = redisKeyspace(redis, 'cache')
 * afterAll(() => space.cleanup())
 * await redis.set(space.key('a'), '1')
 * ```
 */
export function redisKeyspace(redis: RedisKeyspaceClient, label = 'keys'): RedisKeyspace {
  const prefix = `${uniqueName(label)}:`
  // keys written through this client carry its own keyPrefix in front of ours
  const pattern = `${escapeGlob(keyPrefixOf(redis) + prefix)}*`
  return {
    prefix,
    key: (name) => `${prefix}${name}`,
    async cleanup() {
      if (redis.isCluster === true && typeof redis.nodes === 'function') {
        const counts = await Promise.all(
          redis.nodes('master').map((node) => unlinkUnder(node, pattern, true)),
        )
        return counts.reduce((sum, count) => sum + count, 0)
      }
      return unlinkUnder(redis, pattern, false)
    },
  }
}
