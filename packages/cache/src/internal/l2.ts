import { createHash } from 'node:crypto'
import calculateSlot from 'cluster-key-slot'
import type { Cluster, Redis } from 'ioredis'
import type { L2Call } from './telemetry.js'

/** An ioredis client: a standalone `Redis` or a `Cluster`. */
export type RedisClient = Redis | Cluster

/**
 * Runs one operation on L2 under the guard (breaker and timeout) of the node that serves
 * `route` (a Redis key the operation touches: on a Cluster, its slot picks the node's
 * breaker), in a span when traced.
 */
export type L2Runner = <R, A = undefined>(
  call: L2Call,
  route: string,
  fn: (l2: L2, arg: A) => Promise<R>,
  arg?: A,
) => Promise<R>

// KEYS[1] entry; ARGV[1] expected token ('' = absent), ARGV[2] value, ARGV[3] px
const CAS = `local cur = redis.call('GET', KEYS[1])
local tok = ''
if cur then tok = string.match(cur, '^([^|]*)') or '?' end
if tok ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`

// KEYS[1] tag (a sorted set: member = key, score = when its entry expires, ms since the epoch);
// ARGV[1] now, then pairs of expiry and member. Expired members are pruned on every write, and
// the set lives as long as its longest-lived member, so a tag's set holds only live entries.
// Something else at the tag's key (not ours: a foreign write) is replaced, or every tagged
// write and every deleteByTag of the tag would fail, and a deleteByTag's replay forever.
const NOT_A_TAG = `local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'zset' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
`
const ADD_TAG = `${NOT_A_TAG}redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 2, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], string.format('%d', math.ceil(tonumber(last[2])))) end
return 1`

// KEYS[1] tag; ARGV[1] now: prunes expired members, returns how many are left
const PRUNE_TAG = `${NOT_A_TAG}redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])`

// KEYS[1] tag; ARGV pairs of member and the score it had when read. A member whose score
// changed since (a write added it again, with its own expiry) stays: it is a newer entry that
// still carries the tag, and a later deleteByTag must find it.
const REMOVE_TAG_MEMBERS = `local n = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return n`

// KEYS[1] lock; ARGV[1] owner token
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

interface Script {
  text: string
  sha: string
}

function script(text: string): Script {
  return { text, sha: createHash('sha1').update(text).digest('hex') }
}

const SCRIPTS = {
  cas: script(CAS),
  addTag: script(ADD_TAG),
  pruneTag: script(PRUNE_TAG),
  removeTagMembers: script(REMOVE_TAG_MEMBERS),
  release: script(RELEASE),
}

/** Members per tag command: every call stays small whatever the size of the tag. */
export const TAG_CHUNK = 500

/** A key to add to a tag, with the time its entry expires (ms since the epoch). */
export interface TagMember {
  member: string
  until: number
}

/** A member of a tag as read: the key, and its score (when its entry expires) as Redis wrote it. */
export interface TagEntry {
  member: string
  score: string
}

/**
 * The Redis commands the cache sends, each a single round trip (or one per slot on a
 * Cluster). No policy here: timeouts and the breaker wrap these calls in the cache.
 *
 * Durations may be fractional milliseconds (`'1.5ms'`, a grace of 0.5): every `PX` is rounded
 * up, as Redis takes only integers.
 */
export class L2 {
  readonly client: RedisClient
  readonly isCluster: boolean

  constructor(client: RedisClient) {
    this.client = client
    this.isCluster = (client as { isCluster?: boolean }).isCluster === true
  }

  get(key: string): Promise<string | null> {
    return this.client.get(key)
  }

  /** One MGET; on a Cluster, one MGET per hash slot, in parallel. */
  async mget(keys: readonly string[]): Promise<(string | null)[]> {
    if (keys.length === 0) return []
    if (!this.isCluster) return this.client.mget(keys as string[])
    const bySlot = new Map<number, number[]>()
    for (let i = 0; i < keys.length; i++) {
      const slot = calculateSlot(keys[i] as string)
      const group = bySlot.get(slot)
      if (group === undefined) bySlot.set(slot, [i])
      else group.push(i)
    }
    const out: (string | null)[] = new Array(keys.length).fill(null)
    await Promise.all(
      [...bySlot.values()].map(async (indexes) => {
        const values = await this.client.mget(indexes.map((i) => keys[i] as string))
        for (let j = 0; j < indexes.length; j++) out[indexes[j] as number] = values[j] ?? null
      }),
    )
    return out
  }

  async set(key: string, value: string, px: number): Promise<void> {
    await this.client.set(key, value, 'PX', Math.ceil(px))
  }

  /** Writes many; one pipeline on a standalone server, commands sent together on a Cluster. */
  async setMany(items: readonly { key: string; value: string; px: number }[]): Promise<void> {
    if (items.length === 0) return
    if (items.length === 1) {
      // one write: a plain SET, without a pipeline's bookkeeping
      const item = items[0] as { key: string; value: string; px: number }
      return this.set(item.key, item.value, item.px)
    }
    if (!this.isCluster) {
      const pipeline = this.client.pipeline()
      for (const item of items) pipeline.set(item.key, item.value, 'PX', Math.ceil(item.px))
      const results = await pipeline.exec()
      for (const [error] of results ?? []) if (error) throw error
      return
    }
    await Promise.all(
      items.map((item) => this.client.set(item.key, item.value, 'PX', Math.ceil(item.px))),
    )
  }

  /**
   * Writes many, then publishes `message` on `channel`, in one pipeline (one round trip; Redis
   * runs them in order, so the message never arrives before the writes). Standalone only: on a
   * Cluster the channel and the keys live on different nodes.
   */
  async setManyAndPublish(
    items: readonly { key: string; value: string; px: number }[],
    channel: string,
    message: string,
  ): Promise<void> {
    const pipeline = this.client.pipeline()
    for (const item of items) pipeline.set(item.key, item.value, 'PX', Math.ceil(item.px))
    pipeline.publish(channel, message)
    const results = await pipeline.exec()
    for (const [error] of results ?? []) if (error) throw error
  }

  /** Writes `value` only if the key's token is still `expected` ('' = absent). */
  async cas(key: string, expected: string, value: string, px: number): Promise<boolean> {
    return (await this.#eval(SCRIPTS.cas, key, expected, value, String(Math.ceil(px)))) === 1
  }

  /** Adds members to tags, pruning each tag's expired members: one script call per tag and chunk. */
  async addTags(byTag: ReadonlyMap<string, readonly TagMember[]>, now: number): Promise<void> {
    const calls: Promise<unknown>[] = []
    for (const [tagKey, members] of byTag) {
      for (let from = 0; from < members.length; from += TAG_CHUNK) {
        const args: string[] = [String(now)]
        for (const m of members.slice(from, from + TAG_CHUNK)) args.push(String(m.until), m.member)
        calls.push(this.#eval(SCRIPTS.addTag, tagKey, ...args))
      }
    }
    await Promise.all(calls)
  }

  /** Drops the tag's expired members; returns how many are left. */
  async pruneTag(tagKey: string, now: number): Promise<number> {
    return Number(await this.#eval(SCRIPTS.pruneTag, tagKey, String(now)))
  }

  /**
   * One page of a tag's members with their scores; `[nextCursor, members]`. ZSCAN returns every
   * member that is in the set from the first page to the last, however many are added or
   * removed meanwhile, which reading the lowest scores again and again does not.
   */
  async scanTag(tagKey: string, cursor: string, count: number): Promise<[string, TagEntry[]]> {
    const [next, flat] = await this.client.zscan(tagKey, cursor, 'COUNT', String(count))
    const members: TagEntry[] = []
    for (let i = 0; i + 1 < flat.length; i += 2)
      members.push({ member: flat[i] as string, score: flat[i + 1] as string })
    return [next, members]
  }

  /** Removes members read by {@link L2.scanTag}, each only if its score is unchanged since. */
  async removeTagMembers(tagKey: string, members: readonly TagEntry[]): Promise<void> {
    if (members.length === 0) return
    const args: string[] = []
    for (const m of members) args.push(m.member, m.score)
    await this.#eval(SCRIPTS.removeTagMembers, tagKey, ...args)
  }

  /** One page of a tag set written by an older version (a plain set); `[nextCursor, members]`. */
  async scanLegacyTag(setKey: string, cursor: string, count: number): Promise<[string, string[]]> {
    try {
      return await this.client.sscan(setKey, cursor, 'COUNT', String(count))
    } catch (error) {
      // not a set (a foreign write): nothing of ours to find there, and it must not fail every deleteByTag
      if (!(error instanceof Error) || !error.message.startsWith('WRONGTYPE')) throw error
      await this.client.del(setKey)
      return ['0', []]
    }
  }

  async removeLegacyTagMembers(setKey: string, members: readonly string[]): Promise<void> {
    if (members.length > 0) await this.client.srem(setKey, ...members)
  }

  async del(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return
    await Promise.all(keys.map((key) => this.client.del(key)))
  }

  async incr(key: string): Promise<number> {
    return this.client.incr(key)
  }

  async acquire(key: string, owner: string, px: number): Promise<boolean> {
    return (await this.client.set(key, owner, 'PX', Math.ceil(px), 'NX')) === 'OK'
  }

  async release(key: string, owner: string): Promise<void> {
    await this.#eval(SCRIPTS.release, key, owner)
  }

  async publish(channel: string, message: string): Promise<void> {
    if (this.isCluster) await this.client.spublish(channel, message)
    else await this.client.publish(channel, message)
  }

  /** Sets bits (a Bloom filter's add). */
  async setBits(key: string, offsets: readonly number[]): Promise<void> {
    if (offsets.length === 0) return
    const args: (string | number)[] = [key]
    for (const offset of offsets) args.push('SET', 'u1', offset, 1)
    await this.client.call('BITFIELD', ...args)
  }

  /** Reads bits (a Bloom filter's check). */
  async getBits(key: string, offsets: readonly number[]): Promise<number[]> {
    if (offsets.length === 0) return []
    const args: (string | number)[] = [key]
    for (const offset of offsets) args.push('GET', 'u1', offset)
    return (await this.client.call('BITFIELD_RO', ...args)) as number[]
  }

  async #eval(s: Script, key: string, ...args: string[]): Promise<unknown> {
    try {
      return await this.client.evalsha(s.sha, 1, key, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return this.client.eval(s.text, 1, key, ...args)
    }
  }
}
