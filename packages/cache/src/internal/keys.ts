import type { TagMember } from './l2.js'

/** A tagged write: the user's key, its tags, and how long its L2 entry lives (ms). */
export interface TagWrite {
  tags: readonly string[]
  key: string
  px: number
}

/**
 * The names of every Redis key and channel of one namespace. Entries, tags and locks live
 * under the namespace generation, which `clear()` moves: keys of an older generation are never
 * read again and expire by TTL.
 *
 *   <prefix>:<namespace>:<generation>:e:<key>   an entry (an envelope, see envelope.ts)
 *   <prefix>:<namespace>:<generation>:z:<tag>   a tag: sorted set of keys, scored by expiry
 *   <prefix>:<namespace>:<generation>:t:<tag>   a tag written before sorted sets (plain set)
 *   <prefix>:<namespace>:<generation>:l:<key>   the lease lock of a load
 *   <prefix>:<namespace>:gen                    the generation
 *   <prefix>:<namespace>:bloom                  the Bloom filter's bits
 *   <prefix>:<namespace>:bus                    the invalidation channel
 */
export class KeyNames {
  /** `<prefix>:<namespace>:`, the start of every name. */
  readonly base: string
  /** The namespace generation this instance reads and writes; only grows. */
  generation = 0

  constructor(prefix: string, namespace: string) {
    this.base = `${prefix}:${namespace}:`
  }

  entry(key: string): string {
    return `${this.base}${this.generation}:e:${key}`
  }

  tag(tag: string): string {
    return `${this.base}${this.generation}:z:${tag}`
  }

  /** Where versions before sorted-set tags kept a tag (a plain set, never pruned). */
  legacyTag(tag: string): string {
    return `${this.base}${this.generation}:t:${tag}`
  }

  lock(key: string): string {
    return `${this.base}${this.generation}:l:${key}`
  }

  generationKey(): string {
    return `${this.base}gen`
  }

  bloom(): string {
    return `${this.base}bloom`
  }

  channel(): string {
    return `${this.base}bus`
  }

  /** Tag writes grouped by tag key: one script call per tag (and chunk), however many keys carry it. */
  tagMembers(tagWrites: readonly TagWrite[], now: number): Map<string, TagMember[]> {
    const byTag = new Map<string, TagMember[]>()
    for (const write of tagWrites) {
      for (const tag of write.tags) {
        const tagKey = this.tag(tag)
        let members = byTag.get(tagKey)
        if (members === undefined) {
          members = []
          byTag.set(tagKey, members)
        }
        members.push({ member: write.key, until: now + write.px })
      }
    }
    return byTag
  }
}
