import { InvalidSlotMapError } from '../errors.js'
import type { MovePhase, SlotMap, SlotRange } from '../slotMap.js'
import { buildSlotTable, type RingSettings } from './slotTable.js'

export const SHARD_ID = /^[A-Za-z0-9_-]{1,64}$/
const PHASES: readonly MovePhase[] = ['copying', 'catching-up', 'fenced']

/** A slot map compiled for routing: per slot, the index of its owner in `ids`, and whether it is moving. */
export interface CompiledSlotMap {
  readonly map: SlotMap
  /** The shard ids the map names, in first-appearance order. */
  readonly ids: readonly string[]
  /** `owners[slot]` is the index into `ids` of the slot's owner. */
  readonly owners: Uint16Array
  /** `moving[slot]` is 1 while the slot's range moves and its writers check the fence (`catching-up`, `fenced`). */
  readonly moving: Uint8Array
}

function bad(message: string): never {
  throw new InvalidSlotMapError(`invalid slot map: ${message}`)
}

function isSlotCount(slots: unknown): slots is number {
  return (
    typeof slots === 'number' &&
    Number.isInteger(slots) &&
    slots >= 1 &&
    slots <= 65536 &&
    (slots & (slots - 1)) === 0
  )
}

/** Checks ranges read from the store or built by a change: in order, covering `[0, slots)` once, known phases and ids. */
export function checkRanges(slots: unknown, ranges: unknown): SlotRange[] {
  if (!isSlotCount(slots)) bad(`"slots" must be a power of two up to 65536, got ${String(slots)}`)
  if (!Array.isArray(ranges) || ranges.length === 0) bad('"ranges" must be a non-empty array')
  const out: SlotRange[] = []
  let next = 0
  for (const [i, raw] of (ranges as unknown[]).entries()) {
    if (typeof raw !== 'object' || raw === null) bad(`range ${i} is not an object`)
    const r = raw as Record<string, unknown>
    const { start, end, shard, moving } = r
    if (start !== next) bad(`range ${i} starts at ${String(start)}, expected ${next}`)
    if (typeof end !== 'number' || !Number.isInteger(end) || end <= next || end > slots)
      bad(`range ${i} ends at ${String(end)}: expected an integer in (${next}, ${slots}]`)
    if (typeof shard !== 'string' || !SHARD_ID.test(shard)) bad(`range ${i} has no valid shard id`)
    let range: SlotRange = { start: next, end, shard }
    if (moving !== undefined && moving !== null) {
      const m = moving as Record<string, unknown>
      if (typeof m.to !== 'string' || !SHARD_ID.test(m.to) || m.to === shard)
        bad(`range ${i} moves to no valid shard id other than its owner`)
      if (!PHASES.includes(m.phase as MovePhase)) bad(`range ${i} has an unknown phase`)
      range = { ...range, moving: { to: m.to, phase: m.phase as MovePhase } }
    }
    out.push(range)
    next = end
  }
  if (next !== slots) bad(`the ranges end at slot ${next}, expected ${slots}`)
  return out
}

function sameRange(a: SlotRange, b: SlotRange): boolean {
  return a.shard === b.shard && a.moving?.to === b.moving?.to && a.moving?.phase === b.moving?.phase
}

/** Joins neighbouring ranges with the same owner and move. */
export function normalize(ranges: readonly SlotRange[]): SlotRange[] {
  const out: SlotRange[] = []
  for (const range of ranges) {
    const last = out[out.length - 1]
    if (last !== undefined && last.end === range.start && sameRange(last, range))
      out[out.length - 1] = { ...last, end: range.end }
    else out.push(range)
  }
  return out
}

/** The ranges the static ring gives: a map made from them places every key where the ring does. */
export function rangesFromRing(
  shards: ReadonlyArray<{ id: string; weight?: number | undefined }>,
  slots: number,
  ring: RingSettings,
): SlotRange[] {
  const { ids, table } = buildSlotTable(shards, slots, ring)
  const ranges: SlotRange[] = []
  for (let slot = 0; slot < slots; slot++)
    ranges.push({ start: slot, end: slot + 1, shard: ids[table[slot]!]! })
  return normalize(ranges)
}

/**
 * Rewrites the slots `[start, end)` with `change` (given each range's part inside the span) and
 * keeps the rest; the result is normalized.
 */
export function rewrite(
  map: SlotMap,
  start: number,
  end: number,
  change: (part: SlotRange) => SlotRange,
): SlotRange[] {
  const out: SlotRange[] = []
  for (const range of map.ranges) {
    if (range.end <= start || range.start >= end) {
      out.push(range)
      continue
    }
    if (range.start < start) out.push({ ...range, end: start })
    out.push(
      change({ ...range, start: Math.max(range.start, start), end: Math.min(range.end, end) }),
    )
    if (range.end > end) out.push({ ...range, start: end })
  }
  return normalize(out)
}

/** The ranges that overlap `[start, end)`, cut to it. */
export function rangesIn(map: SlotMap, start: number, end: number): SlotRange[] {
  const out: SlotRange[] = []
  for (const range of map.ranges) {
    if (range.end <= start || range.start >= end) continue
    out.push({ ...range, start: Math.max(range.start, start), end: Math.min(range.end, end) })
  }
  return out
}

/** Per slot owner and moving flag, for routing. */
export function compile(map: SlotMap): CompiledSlotMap {
  const ids: string[] = []
  const index = new Map<string, number>()
  const owners = new Uint16Array(map.slots)
  const moving = new Uint8Array(map.slots)
  for (const range of map.ranges) {
    let i = index.get(range.shard)
    if (i === undefined) {
      i = ids.length
      ids.push(range.shard)
      index.set(range.shard, i)
    }
    owners.fill(i, range.start, range.end)
    // Writers check the fence from `catching-up` on (while rows are copied, the change log
    // keeps up with their writes, and no cut-over comes before fenceDelay after that).
    if (range.moving !== undefined && range.moving.phase !== 'copying')
      moving.fill(1, range.start, range.end)
  }
  return { map, ids, owners, moving }
}
