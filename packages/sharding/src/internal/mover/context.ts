import type { Emitter } from '@ballast/shared'
import type { SlotMap } from '../../slotMap.js'
import type { SlotMapStore, SlotMapStoreInternals } from '../../slotMapStore.js'
import type { MovedTable, MoveStep, SlotMoverEvents, SlotSpan } from '../../slotMover.js'
import { argument } from '../check.js'
import { rangesIn } from '../slotRanges.js'
import type { ShardConnections } from './connections.js'

/** What every step of the slot mover works with: its options, merged and checked, and its connections. */
export interface MoverContext {
  readonly store: SlotMapStore
  readonly internals: SlotMapStoreInternals
  readonly fenceTable: string
  readonly logTable: string
  readonly tables: readonly MovedTable[]
  readonly chunkRows: number
  readonly fenceDelayMs: number
  readonly verify: boolean
  readonly connections: ShardConnections
  /** The pause after each chunk of the copy and of a catch-up pass ({@link createThrottle}). */
  readonly throttle: () => Promise<void>
  readonly events: Emitter<SlotMoverEvents>
}

/** A move's span and its ends, as the map has it. */
export interface Moving {
  from: string
  to: string
  start: number
  end: number
  slots: number
  map: SlotMap
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Emits `phase-changed` (only when someone listens). */
export function emitPhase(
  context: MoverContext,
  start: number,
  end: number,
  from: string,
  to: string,
  phase: MoveStep,
): void {
  if (context.events.has('phase-changed'))
    context.events.emit('phase-changed', { start, end, from, to, phase })
}

/** Checks a span argument against the map's slot count. */
export function checkSpan(span: SlotSpan, map: SlotMap): { start: number; end: number } {
  if (typeof span !== 'object' || span === null)
    argument.invalid('span', 'an object { start, end }', span)
  const start = argument.integer('span.start', span.start, { min: 0, max: map.slots - 1 })
  const end = argument.integer('span.end', span.end, { min: start + 1, max: map.slots })
  return { start, end }
}

/** The span's move as the map has it; throws if it is not moving. */
export async function moving(
  context: MoverContext,
  span: SlotSpan,
  operation: string,
): Promise<Moving> {
  const map = await context.store.refresh()
  const { start, end } = checkSpan(span, map)
  const parts = rangesIn(map, start, end)
  const from = parts[0]!.shard
  const to = parts[0]!.moving?.to ?? ''
  if (to === '' || parts.some((p) => p.shard !== from || p.moving?.to !== to))
    argument.invalid(
      'span',
      `slots moving from one shard to one shard (begin() before ${operation}())`,
      `${start}-${end}`,
    )
  return { from, to, start, end, slots: map.slots, map }
}
