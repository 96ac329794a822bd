import type { CacheEvents } from '../cacheEvents.js'
import {
  keysInvalidated,
  namespaceCleared,
  type OutgoingMessage,
  tagsInvalidated,
} from './busMessages.js'
import { exactNow } from './clock.js'
import { PendingInvalidations, tombstoneEnvelope } from './invalidations.js'
import type { KeyNames } from './keys.js'
import { type L2Runner, TAG_CHUNK } from './l2.js'
import type { ResolvedOptions } from './options.js'
import { L2_CALLS, writeCall } from './telemetry.js'

/** What the L2 invalidations use of the cache. */
export interface L2InvalidationsHost {
  readonly options: ResolvedOptions
  readonly keys: KeyNames
  readonly closed: boolean
  run: L2Runner
  publish(message: OutgoingMessage): Promise<void>
  token(): string
  l2Failed(operation: string, error: unknown): void
  emit<E extends keyof CacheEvents>(event: E, payload: CacheEvents[E]): void
}

/**
 * Invalidations in L2: tombstones (a delete writes one, so a fill that started before it cannot
 * write its old value back), the deletion of a tag's keys in chunks, the clear of a namespace
 * (a new generation), and the replay of those that could not reach L2, before L2 is read again.
 */
export class L2Invalidations {
  readonly #host: L2InvalidationsHost
  readonly #pending: PendingInvalidations
  #replaying: Promise<void> | undefined
  /** Retries the replay: a failure that never opens the breaker nor drops the bus must not keep L2 unread. */
  #replayTimer: NodeJS.Timeout | undefined

  constructor(host: L2InvalidationsHost) {
    this.#host = host
    this.#pending = new PendingInvalidations(host.options.maxPendingInvalidations)
  }

  /** Invalidations waiting for replay (a clear counts one); L2 is not read while any wait. */
  get pendingCount(): number {
    return this.#pending.count
  }

  /** Stops the replay timer (the cache is closing). */
  close(): void {
    clearTimeout(this.#replayTimer)
    this.#replayTimer = undefined
  }

  /** Writes a tombstone at each key. */
  async tombstone(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return
    const t = exactNow()
    const until = t + this.#host.options.tombstoneTtl
    // keys on several nodes count against the first key's node (see L2Guards)
    await this.#host.run(
      writeCall('delete', keys.length),
      this.#host.keys.entry(keys[0] as string),
      (l2) =>
        l2.setMany(
          keys.map((key) => ({
            key: this.#host.keys.entry(key),
            value: tombstoneEnvelope(this.#host.token(), until),
            px: this.#host.options.tombstoneTtl,
          })),
        ),
    )
  }

  /**
   * Tombstones a tag's members and removes them from its set, `TAG_CHUNK` at a time, so each
   * L2 call stays small and within `l2Timeout` whatever the size of the tag. Members are
   * removed only once tombstoned: a failure part-way leaves the rest for the replay.
   */
  async deleteTags(tags: readonly string[]): Promise<void> {
    for (const tag of tags) {
      const tagKey = this.#host.keys.tag(tag)
      await this.#host.run(L2_CALLS.pruneTag, tagKey, (l2) => l2.pruneTag(tagKey, exactNow()))
      // by ZSCAN: every member present from start to end is reached, whatever writers add
      // meanwhile (a member written again during the scan keeps its place, see removeTagMembers)
      let zcursor = '0'
      do {
        const [next, members] = await this.#host.run(L2_CALLS.scanTag, tagKey, (l2) =>
          l2.scanTag(tagKey, zcursor, TAG_CHUNK),
        )
        if (members.length > 0) {
          await this.tombstone(members.map((m) => m.member))
          await this.#host.run(L2_CALLS.removeTagMembers, tagKey, (l2) =>
            l2.removeTagMembers(tagKey, members),
          )
        }
        zcursor = next
      } while (zcursor !== '0')
      // a tag set written by a version before sorted sets (a rolling deploy): same, by SSCAN
      const legacyKey = this.#host.keys.legacyTag(tag)
      let cursor = '0'
      do {
        const [next, members] = await this.#host.run(L2_CALLS.scanLegacyTag, legacyKey, (l2) =>
          l2.scanLegacyTag(legacyKey, cursor, TAG_CHUNK),
        )
        if (members.length > 0) {
          await this.tombstone(members)
          await this.#host.run(L2_CALLS.removeLegacyTagMembers, legacyKey, (l2) =>
            l2.removeLegacyTagMembers(legacyKey, members),
          )
        }
        cursor = next
      } while (cursor !== '0')
    }
  }

  async clearNamespace(): Promise<void> {
    const generationKey = this.#host.keys.generationKey()
    const generation = await this.#host.run(L2_CALLS.clear, generationKey, (l2) =>
      l2.incr(generationKey),
    )
    if (generation > this.#host.keys.generation) this.#host.keys.generation = generation
    await this.#host.publish(namespaceCleared(generation))
  }

  defer(keys: readonly string[], tags: readonly string[], clear: boolean): void {
    this.#pending.defer(keys, tags, clear)
    this.#scheduleReplay()
  }

  #scheduleReplay(): void {
    if (this.#replayTimer !== undefined || this.#host.closed) return
    this.#replayTimer = setTimeout(() => {
      this.#replayTimer = undefined
      void this.replay()
    }, this.#host.options.replayDelay)
    this.#replayTimer.unref()
  }

  /** Replays invalidations made while L2 was down, before L2 is read again. */
  replay(): Promise<void> {
    if (this.#replaying !== undefined || this.#pending.count === 0 || this.#host.closed)
      return this.#replaying ?? Promise.resolve()
    const replayed = this.#pending.snapshot()
    const keys = replayed.keyDeferrals.map(([key]) => key)
    const tags = replayed.tagDeferrals.map(([tag]) => tag)
    const clear = replayed.clearDeferral > 0
    this.#replaying = (async () => {
      try {
        if (clear) await this.clearNamespace()
        else {
          if (keys.length > 0) {
            await this.tombstone(keys)
            await this.#host.publish(keysInvalidated(keys))
          }
          if (tags.length > 0) {
            await this.deleteTags(tags)
            await this.#host.publish(tagsInvalidated(tags))
          }
        }
        // only what this replay covered: a deferral made meanwhile has a newer number and stays
        this.#pending.forgetReplayed(replayed)
        this.#host.emit('invalidations-replayed', { keys: keys.length, tags: tags.length, clear })
      } catch (error) {
        this.#host.l2Failed('replay', error)
      } finally {
        this.#replaying = undefined
        // whatever is left (a failure, or deferred meanwhile) is tried again later
        if (this.#pending.count > 0) this.#scheduleReplay()
      }
    })()
    return this.#replaying
  }
}
