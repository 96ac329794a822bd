import { murmur3 } from '@ballast/lb'
import { ShardKeyMissingError } from './errors.js'

/**
 * A slot given directly instead of a key, e.g. the slot embedded in an id by
 * {@link IdGenerator} (`ids.slotOf(orderId)`), so an order routes to its user's shard with no
 * lookup table.
 */
export interface SlotKey {
  /** The slot, `0 <= slot < slots`. */
  readonly slot: number
}

/**
 * What rows are spread by: the user id, the tenant id. Strings and numbers that print alike
 * route alike (`42` and `'42'` and `42n` go to the same shard).
 */
export type ShardKey = string | number | bigint | SlotKey

/** Seed of the key-to-slot hash; a constant so every process and version agrees. */
const SLOT_SEED = 0x5eed_51a7

/**
 * The slot of a shard key: `murmur3(String(key)) mod slots`. Keys hash to a fixed number of
 * slots and the ring places slots on shards, so every key of a slot lives on the same shard
 * and a resharding plan moves whole slots.
 *
 * @param key - the shard key (or a {@link SlotKey}, returned as is).
 * @param slots - how many slots there are, a power of two.
 * @throws ShardKeyMissingError if the key is `undefined`, `null`, `''` or not a finite number.
 * @example
 * ```ts
 * slotFor('user:42', 4096) // always the same slot in [0, 4096)
 * ```
 */
export function slotFor(key: ShardKey, slots: number): number {
  if (typeof key === 'object' && key !== null) {
    const slot = key.slot
    if (!Number.isInteger(slot) || slot < 0 || slot >= slots) {
      throw new ShardKeyMissingError(
        `invalid slot ${String(slot)}: expected an integer in [0, ${slots})`,
      )
    }
    return slot
  }
  return (murmur3(canonicalKey(key), SLOT_SEED) & (slots - 1)) >>> 0
}

/** The string a key is hashed as. */
export function canonicalKey(key: string | number | bigint): string {
  switch (typeof key) {
    case 'string':
      if (key.length === 0)
        throw new ShardKeyMissingError('a shard key is required: got an empty string')
      return key
    case 'number':
      if (!Number.isFinite(key))
        throw new ShardKeyMissingError(`a shard key is required: got ${key}`)
      return String(key)
    case 'bigint':
      return key.toString()
    default:
      throw new ShardKeyMissingError(
        `a shard key is required: got ${key === null ? 'null' : typeof key}`,
      )
  }
}
