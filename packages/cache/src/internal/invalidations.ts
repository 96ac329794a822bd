import type { L1Store } from '../l1Store.js'
import { encodeEnvelope } from './envelope.js'

/** Keys or tags whose invalidation epochs are kept; past it, every read in flight counts as invalidated. */
const MAX_TRACKED_INVALIDATIONS = 10_000

/**
 * Local invalidation bookkeeping: every invalidation this process sees moves the epoch, and a
 * read or load that began at an earlier epoch may not write L1 for a key (or tag) invalidated
 * since. A set's invalidation names the version it wrote, so that a copy of that very write
 * may stay.
 */
export class InvalidationEpochs {
  /** The epoch now; a read or load remembers it when it begins. */
  current = 0
  /** Reads that began before it are treated as invalidated (the maps were forgotten). */
  #floor = 0
  readonly #keyEpochs = new Map<string, number>()
  readonly #tagEpochs = new Map<string, number>()
  /** The version named by the last invalidation of a key (a set), if any. */
  readonly #keyVersions = new Map<string, string | undefined>()

  /** Drops keys from L1; `versions[i]`, when given, is the write that caused it: a copy of that very write stays. */
  invalidateKeys(
    keys: readonly string[],
    versions: readonly string[] | undefined,
    l1: L1Store | undefined,
  ): void {
    const epoch = ++this.current
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const version = versions?.[i]
      const known = version === undefined || version === '' ? undefined : version
      if (known === undefined || l1?.get(key)?.version !== known) l1?.delete(key)
      this.#keyEpochs.set(key, epoch)
      // absent reads as undefined: no entry to keep for a version nobody named
      if (known === undefined) this.#keyVersions.delete(key)
      else this.#keyVersions.set(key, known)
    }
  }

  /** Forgets everything once too many keys are tracked (after a key invalidation's wake-ups). */
  trimKeys(): void {
    if (this.#keyEpochs.size > MAX_TRACKED_INVALIDATIONS) this.forget()
  }

  /** Drops every L1 entry carrying one of `tags`. */
  invalidateTags(tags: readonly string[], l1: L1Store | undefined): void {
    const epoch = ++this.current
    for (const tag of tags) this.#tagEpochs.set(tag, epoch)
    if (l1 !== undefined) {
      // A Set, so the sweep costs L1 entries x their own tags, not x the message's tags: a
      // forged message with thousands of tags must not hold the event loop of every instance.
      const gone = new Set(tags)
      const doomed: string[] = []
      for (const [key, entry] of l1.entries()) {
        if (entry.tags?.some((tag) => gone.has(tag))) doomed.push(key)
      }
      for (const key of doomed) l1.delete(key)
    }
    if (this.#tagEpochs.size > MAX_TRACKED_INVALIDATIONS) this.forget()
  }

  /** L1 is being emptied: every read in flight is treated as invalidated. */
  flush(): void {
    this.current++
    this.forget()
  }

  /** Too many to track: every read in flight is treated as invalidated. */
  forget(): void {
    this.#keyEpochs.clear()
    this.#keyVersions.clear()
    this.#tagEpochs.clear()
    this.#floor = this.current
  }

  tagInvalidatedSince(tags: readonly string[], epoch: number): boolean {
    for (const tag of tags) if ((this.#tagEpochs.get(tag) ?? 0) > epoch) return true
    return false
  }

  /** Whether a read or load that began at `epoch` may still write L1. */
  stillValid(
    key: string,
    tags: readonly string[] | undefined,
    epoch: number,
    version?: string,
  ): boolean {
    if (epoch < this.#floor) return false
    if ((this.#keyEpochs.get(key) ?? 0) > epoch) {
      // invalidated meanwhile; fine only if the invalidation was for the very write we read
      if (version === undefined || this.#keyVersions.get(key) !== version) return false
    }
    return tags === undefined || !this.tagInvalidatedSince(tags, epoch)
  }
}

/** What one replay covers: each key and tag with the number of its latest deferral. */
export interface ReplaySnapshot {
  keyDeferrals: [string, number][]
  tagDeferrals: [string, number][]
  /** The deferral number of the clear, 0 for none. */
  clearDeferral: number
}

/**
 * Invalidations that could not reach L2, waiting for replay, each with the number of its latest
 * deferral (`clear`: 0 for none), so that a replay forgets only what it replayed: a key
 * deferred again while the replay runs stays pending. Past `max` keys and tags, the replay is
 * a clear of the namespace.
 */
export class PendingInvalidations {
  readonly keys = new Map<string, number>()
  readonly tags = new Map<string, number>()
  clear = 0
  #deferrals = 0
  readonly #max: number

  constructor(max: number) {
    this.#max = max
  }

  defer(keys: readonly string[], tags: readonly string[], clear: boolean): void {
    const deferral = ++this.#deferrals
    if (clear) this.clear = deferral
    for (const key of keys) this.keys.set(key, deferral)
    for (const tag of tags) this.tags.set(tag, deferral)
    if (this.keys.size + this.tags.size > this.#max) {
      this.keys.clear()
      this.tags.clear()
      this.clear = deferral
    }
  }

  /** Keys, tags and the clear waiting (the clear counts one). */
  get count(): number {
    return this.keys.size + this.tags.size + (this.clear > 0 ? 1 : 0)
  }

  snapshot(): ReplaySnapshot {
    return { keyDeferrals: [...this.keys], tagDeferrals: [...this.tags], clearDeferral: this.clear }
  }

  /** Forgets what a replay covered: a deferral made meanwhile has a newer number and stays. */
  forgetReplayed(replayed: ReplaySnapshot): void {
    if (this.clear === replayed.clearDeferral) this.clear = 0
    for (const [key, deferral] of replayed.keyDeferrals)
      if (this.keys.get(key) === deferral) this.keys.delete(key)
    for (const [tag, deferral] of replayed.tagDeferrals)
      if (this.tags.get(tag) === deferral) this.tags.delete(tag)
  }
}

/** The L2 text of a tombstone: it stops a fill that started before a delete from writing back. */
export function tombstoneEnvelope(version: string, until: number): string {
  return encodeEnvelope('t', version, 0, until, 0, undefined, '')
}
