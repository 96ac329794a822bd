import { slotFor } from '../../shardKey.js'
import type { SlotMap, SlotRange } from '../../slotMap.js'
import type { SlotSet, SlotSpan } from '../../slotMover.js'
import { argument } from '../check.js'
import { normalize } from '../slotRanges.js'

/**
 * A move's slots, normalised: its spans sorted and adjacent ones merged, and a bitmap of its
 * slots, so a row's membership costs one hash and one array read however scattered the set is
 * (a ring's share of a new shard is hundreds of ranges).
 */
export interface MoveSet {
  /** The spans, sorted, disjoint, not adjacent. */
  readonly spans: readonly SlotSpan[]
  /** Slots in the set. */
  readonly size: number
  /** The map's slot count, the modulus of {@link slotFor}. */
  readonly slots: number
  /** `member[slot]` is 1 for a slot of the set. */
  readonly member: Uint8Array
  /** The first slot of the set. */
  readonly start: number
  /** One past the last slot of the set. */
  readonly end: number
  /** The argument's name in messages: `span` for one span, `set` for a list. */
  readonly name: 'span' | 'set'
}

/**
 * Checks a {@link SlotSet} argument against the map's slot count and normalises it.
 * @throws InvalidArgumentError for a span out of the map, an empty set, or spans that overlap.
 */
export function moveSet(set: SlotSet, map: SlotMap): MoveSet {
  const isList = Array.isArray(set)
  const list: readonly unknown[] = isList ? (set as readonly unknown[]) : [set]
  if (list.length === 0) argument.invalid('set', 'at least one span { start, end }', set)
  const spans = list.map((span, i) => {
    const name = isList ? `set[${i}]` : 'span'
    if (typeof span !== 'object' || span === null)
      argument.invalid(name, 'an object { start, end }', span)
    const { start: rawStart, end: rawEnd } = span as Record<string, unknown>
    const start = argument.integer(`${name}.start`, rawStart, { min: 0, max: map.slots - 1 })
    const end = argument.integer(`${name}.end`, rawEnd, { min: start + 1, max: map.slots })
    return { start, end }
  })
  spans.sort((a, b) => a.start - b.start)
  const merged: SlotSpan[] = []
  for (const span of spans) {
    const last = merged[merged.length - 1]
    if (last !== undefined && span.start < last.end)
      argument.invalid(
        'set',
        'disjoint spans',
        `${last.start}-${last.end} and ${span.start}-${span.end}`,
      )
    if (last !== undefined && span.start === last.end) last.end = span.end
    else merged.push({ ...span })
  }
  const member = new Uint8Array(map.slots)
  let size = 0
  for (const span of merged) {
    member.fill(1, span.start, span.end)
    size += span.end - span.start
  }
  for (const span of merged) Object.freeze(span)
  return {
    spans: Object.freeze(merged),
    size,
    slots: map.slots,
    member,
    start: merged[0]!.start,
    end: merged[merged.length - 1]!.end,
    name: isList ? 'set' : 'span',
  }
}

/** Whether a shard key value hashes to a slot of the set; no key is in no set. */
export function holds(set: MoveSet, value: unknown): boolean {
  if (value === null || value === undefined || value === '') return false
  const key =
    typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint'
      ? value
      : String(value)
  return set.member[slotFor(key, set.slots)] === 1
}

/** Whether every slot of `set` is in `spans` (a move's saved spans). */
export function covers(spans: readonly SlotSpan[], set: MoveSet): boolean {
  let found = 0
  for (const span of spans)
    for (let slot = span.start; slot < Math.min(span.end, set.slots); slot++)
      found += set.member[slot]!
  return found === set.size
}

/** Whether two normalised span lists are the same slots. */
export function sameSpans(a: readonly SlotSpan[], b: readonly SlotSpan[]): boolean {
  return a.length === b.length && a.every((s, i) => s.start === b[i]!.start && s.end === b[i]!.end)
}

/** The slots moving off `from` in the map, as normalised spans: the move off that source. */
export function movingOff(map: SlotMap, from: string): SlotSpan[] {
  const out: SlotSpan[] = []
  for (const range of map.ranges) {
    if (range.shard !== from || range.moving === undefined) continue
    const last = out[out.length - 1]
    if (last !== undefined && last.end === range.start) last.end = range.end
    else out.push({ start: range.start, end: range.end })
  }
  return out
}

/** The map's ranges cut to the set's slots, in slot order. */
export function rangesInSet(map: SlotMap, set: MoveSet): SlotRange[] {
  const out: SlotRange[] = []
  walk(map, set, (part, inside) => {
    if (inside) out.push(part)
  })
  return out
}

/**
 * The map with the set's slots rewritten by `change` (given each range's part inside the set)
 * and the rest kept, normalized: every span of a set changes in one map version.
 */
export function rewriteSet(
  map: SlotMap,
  set: MoveSet,
  change: (part: SlotRange) => SlotRange,
): SlotRange[] {
  const out: SlotRange[] = []
  walk(map, set, (part, inside) => {
    out.push(inside ? change(part) : part)
  })
  return normalize(out)
}

/** Cuts the map's ranges at the set's span boundaries, in slot order: one pass over both. */
function walk(map: SlotMap, set: MoveSet, visit: (part: SlotRange, inside: boolean) => void): void {
  const spans = set.spans
  let i = 0
  for (const range of map.ranges) {
    let at = range.start
    while (at < range.end) {
      while (i < spans.length && spans[i]!.end <= at) i++
      const span = spans[i]
      if (span === undefined || span.start >= range.end) {
        visit({ ...range, start: at, end: range.end }, false)
        break
      }
      if (span.start > at) {
        visit({ ...range, start: at, end: span.start }, false)
        at = span.start
      }
      const end = Math.min(span.end, range.end)
      visit({ ...range, start: at, end }, true)
      at = end
    }
  }
}

/** A `WHERE` condition on a fence table's `slot` column matching the set's slots. */
export function slotCondition(set: MoveSet): { sql: string; values: unknown[] } {
  if (set.spans.length === 1) return { sql: 'slot >= ? AND slot < ?', values: [set.start, set.end] }
  return { sql: 'slot IN (?)', values: [slotList(set)] }
}

/** The set's slots, in order. */
export function slotList(set: MoveSet): number[] {
  const out: number[] = []
  for (const span of set.spans) for (let slot = span.start; slot < span.end; slot++) out.push(slot)
  return out
}
