import { DEFAULT_HASH_RING_OPTIONS } from '@ballast/lb'
import { merge } from '@ballast/shared'
import { adoptInvalidArgument, argument, option } from './internal/check.js'
import { buildSlotTable } from './internal/slotTable.js'
import type { SlotMap } from './slotMap.js'

/** A shard as placement sees it: its id and weight on the ring. */
export interface ShardPlacement {
  /** The shard id. */
  id: string
  /**
   * Relative share of keys.
   * @default 1
   */
  weight?: number
}

/** Options of {@link planResharding}; they must match the router's. */
export interface ReshardingPlanOptions {
  /**
   * Slots keys hash to (the router's `slots`).
   * @default 4096
   */
  slots?: number
  /**
   * Ring points per unit of weight (the router's `ring.pointsPerWeight`).
   * @default 4096 (lb's HashRing default)
   */
  pointsPerWeight?: number
  /**
   * Ring seed (the router's `ring.seed`).
   * @default 0
   */
  seed?: number
}

/** The defaults of {@link ReshardingPlanOptions}, frozen: the router's and lb's `HashRing`'s. */
export const DEFAULT_RESHARDING_PLAN_OPTIONS: Readonly<Required<ReshardingPlanOptions>> =
  Object.freeze({
    slots: 4096,
    pointsPerWeight: DEFAULT_HASH_RING_OPTIONS.pointsPerWeight,
    seed: DEFAULT_HASH_RING_OPTIONS.seed,
  })

/** Keys that move from one shard to another: slot ranges, `[start, end)`. */
export interface SlotMove {
  /** Where the keys live now. */
  from: string
  /** Where they live after the change. */
  to: string
  /** Contiguous slot ranges, `[start, end)`, in slot order. */
  ranges: Array<[number, number]>
  /** How many slots move along this edge. */
  slots: number
  /** The share of all keys that moves along this edge (slots / total slots). */
  fraction: number
}

/** What changes when the shard list changes, as {@link planResharding} computes it. */
export interface ReshardingPlan {
  /** Total slots. */
  slots: number
  /** Slots whose shard changes. */
  movedSlots: number
  /** The share of keys that moves, `movedSlots / slots` (keys spread evenly over slots). */
  movedFraction: number
  /** The moves, one per (from, to) pair, largest first. */
  moves: SlotMove[]
  /** Per shard id, its share of keys before and after. */
  shares: Record<string, ShardShare>
}

/** One shard's share of the keys (a fraction of all slots, 0 to 1) before and after a change. */
export interface ShardShare {
  /** Its share with the current shard list (0 if it is new). */
  before: number
  /** Its share with the next shard list (0 if it is removed). */
  after: number
}

/**
 * Computes which key ranges (slot ranges) move where when the shard list changes, and the
 * fraction of keys moved, with the same ring placement the router uses. Adding a shard moves
 * keys only to it; removing one moves only its keys. It plans; it does not copy data.
 *
 * @example
 * ```ts
 * import { planResharding } from '@ballast/sharding'
 *
 * const plan = planResharding(['s1', 's2', 's3', 's4'].map((id) => ({ id })), ['s1', 's2', 's3', 's4', 's5'].map((id) => ({ id })))
 * plan.movedFraction // about 0.2: only keys that s5 now owns move
 * plan.moves // [{ from: 's3', to: 's5', ranges: [[17, 18], …], slots, fraction }, …]
 * ```
 */
export function planResharding(
  current: readonly ShardPlacement[],
  next: readonly ShardPlacement[],
  options: ReshardingPlanOptions = {},
): ReshardingPlan {
  if (typeof options !== 'object' || options === null)
    option.invalid('options', 'an object', options)
  const merged = merge(DEFAULT_RESHARDING_PLAN_OPTIONS, options)
  const slots = merged.slots
  if (!Number.isInteger(slots) || slots < 1 || slots > 65536 || (slots & (slots - 1)) !== 0) {
    option.invalid('slots', 'a power of two up to 65536', slots)
  }
  if (!Array.isArray(current) || current.length === 0) {
    argument.invalid('current', 'a non-empty array of shards', current)
  }
  if (!Array.isArray(next) || next.length === 0) {
    argument.invalid('next', 'a non-empty array of shards', next)
  }
  const ring = { pointsPerWeight: merged.pointsPerWeight, seed: merged.seed }
  const before = adoptInvalidArgument(() => buildSlotTable(current, slots, ring))
  const after = adoptInvalidArgument(() => buildSlotTable(next, slots, ring))
  return compare(
    slots,
    [...before.ids, ...after.ids],
    (slot) => before.ids[before.table[slot]!]!,
    (slot) => after.ids[after.table[slot]!]!,
  )
}

/**
 * Like {@link planResharding}, but from a slot map as it is now (ranges moved or being moved
 * keep their current owner) to the ring's placement of `next`: what a resharder still has to move.
 * `options.slots` is the map's.
 */
export function planReshardingFrom(
  map: SlotMap,
  next: readonly ShardPlacement[],
  options: Omit<ReshardingPlanOptions, 'slots'> = {},
): ReshardingPlan {
  if (typeof options !== 'object' || options === null)
    option.invalid('options', 'an object', options)
  const merged = merge(DEFAULT_RESHARDING_PLAN_OPTIONS, { ...options, slots: map.slots })
  if (!Array.isArray(next) || next.length === 0) {
    argument.invalid('next', 'a non-empty array of shards', next)
  }
  const ring = { pointsPerWeight: merged.pointsPerWeight, seed: merged.seed }
  const after = adoptInvalidArgument(() => buildSlotTable(next, map.slots, ring))
  const owners: string[] = []
  for (const range of map.ranges)
    for (let slot = range.start; slot < range.end; slot++) owners[slot] = range.shard
  return compare(
    map.slots,
    [...new Set(owners), ...after.ids],
    (slot) => owners[slot]!,
    (slot) => after.ids[after.table[slot]!]!,
  )
}

/** Groups the slots whose owner differs into one move per (from, to), largest first. */
function compare(
  slots: number,
  ids: readonly string[],
  ownerBefore: (slot: number) => string,
  ownerAfter: (slot: number) => string,
): ReshardingPlan {
  const edges = new Map<string, SlotMove>()
  const shares: Record<string, ShardShare> = {}
  for (const id of new Set(ids)) shares[id] = { before: 0, after: 0 }
  let moved = 0
  for (let slot = 0; slot < slots; slot++) {
    const from = ownerBefore(slot)
    const to = ownerAfter(slot)
    shares[from]!.before += 1 / slots
    shares[to]!.after += 1 / slots
    if (from === to) continue
    moved++
    const key = `${from}\u0000${to}`
    let edge = edges.get(key)
    if (edge === undefined) {
      edge = { from, to, ranges: [], slots: 0, fraction: 0 }
      edges.set(key, edge)
    }
    const lastRange = edge.ranges[edge.ranges.length - 1]
    if (lastRange !== undefined && lastRange[1] === slot) lastRange[1] = slot + 1
    else edge.ranges.push([slot, slot + 1])
    edge.slots++
  }
  const moves = [...edges.values()].sort((a, b) => b.slots - a.slots)
  for (const m of moves) m.fraction = m.slots / slots
  return { slots, movedSlots: moved, movedFraction: moved / slots, moves, shares }
}
