import type { Emitter } from '@ballast/shared'
import { SlotMapConflictError } from '../../errors.js'
import type { MovePhase, SlotMap, SlotRange } from '../../slotMap.js'
import type { SlotMapStore, SlotMapStoreInternals } from '../../slotMapStore.js'
import type { MovedTable, MoveStep, SlotMoverEvents, SlotSet, SlotSpan } from '../../slotMover.js'
import { argument } from '../check.js'
import type { ShardConnections } from './connections.js'
import { type MoveSet, moveSet, movingOff, rangesInSet, rewriteSet, sameSpans } from './slotSet.js'
import type { MoverThrottle } from './throttle.js'

/** What every step of the slot mover works with: its options, merged and checked, and its connections. */
export interface MoverContext {
  readonly store: SlotMapStore
  readonly internals: SlotMapStoreInternals
  readonly fenceTable: string
  readonly logTable: string
  readonly tables: readonly MovedTable[]
  readonly chunkRows: number
  readonly fenceDelayMs: number
  /** How long a step waits for a shard that stopped answering before it gives up. */
  readonly stallTimeoutMs: number
  /** Aborted by the mover's `close()`: a step waiting for a shard gives up. */
  readonly closing: AbortSignal
  readonly verify: boolean
  readonly connections: ShardConnections
  /** Paces the chunks of the copy, of a catch-up pass and of the verification ({@link createMoverThrottle}). */
  readonly throttle: MoverThrottle
  readonly events: Emitter<SlotMoverEvents>
  /**
   * Per source shard, since when (`performance.now()`) this process knows its move's routers
   * check the fence: when it published `catching-up`, or first saw it published. The cut-over
   * takes the fence `fenceDelayMs` after it ({@link fenceInMs}).
   */
  readonly checkedSince: Map<string, number>
}

/** A move as the map has it: its set, source and target. */
export interface Moving {
  from: string
  to: string
  set: MoveSet
  map: SlotMap
  /** The phases of the set's ranges. */
  phases: ReadonlySet<MovePhase>
}

/** What every event of a move carries: which move. */
export interface MoveFields {
  start: number
  end: number
  spans: readonly SlotSpan[]
  slots: number
  from: string
  to: string
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The fields naming a move in its events. */
export function moveFields(set: MoveSet, from: string, to: string): MoveFields {
  return { start: set.start, end: set.end, spans: set.spans, slots: set.size, from, to }
}

/** Emits `phase-changed` (only when someone listens). */
export function emitPhase(
  context: MoverContext,
  set: MoveSet,
  from: string,
  to: string,
  phase: MoveStep,
): void {
  if (context.events.has('phase-changed'))
    context.events.emit('phase-changed', { ...moveFields(set, from, to), phase })
}

/**
 * The set's move as the map has it; throws if it is not moving from one shard to one shard or,
 * with `whole`, is not every slot moving off its source (the copy and the catch-up share the
 * source's change log and the copy's place: a part of the move would consume the rest's).
 */
export async function moving(
  context: MoverContext,
  slotSet: SlotSet,
  operation: string,
  { whole = false }: { whole?: boolean } = {},
): Promise<Moving> {
  const map = await context.store.refresh()
  const set = moveSet(slotSet, map)
  const parts = rangesInSet(map, set)
  const from = parts[0]!.shard
  const to = parts[0]!.moving?.to ?? ''
  if (to === '' || parts.some((p) => p.shard !== from || p.moving?.to !== to))
    argument.invalid(
      set.name,
      `slots moving from one shard to one shard (begin() before ${operation}())`,
      describe(set),
    )
  if (whole && !sameSpans(movingOff(map, from), set.spans))
    argument.invalid(
      set.name,
      `every slot moving off "${from}" (the whole move, as begin() was given it)`,
      describe(set),
    )
  return { from, to, set, map, phases: new Set(parts.map((p) => p.moving!.phase)) }
}

/** A set in a message: its first spans and its size. */
export function describe(set: MoveSet): string {
  const shown = set.spans
    .slice(0, 3)
    .map((s) => `${s.start}-${s.end}`)
    .join(', ')
  return set.spans.length > 3 ? `${shown}, … (${set.spans.length} spans, ${set.size} slots)` : shown
}

/**
 * Rewrites the set's slots in the map in one compare-and-set, read afresh and tried again (up to
 * five times) when another writer of the map got in first: a move off another source changes the
 * map beside this one. The set's own ranges change only under its source's move lock.
 */
export async function updateMap(
  context: MoverContext,
  set: MoveSet,
  change: (part: SlotRange) => SlotRange,
): Promise<SlotMap> {
  for (let attempt = 0; ; attempt++) {
    const map = await context.store.refresh()
    try {
      return await context.store.update(map.version, rewriteSet(map, set, change))
    } catch (error) {
      if (!(error instanceof SlotMapConflictError) || attempt >= 4) throw error
    }
  }
}

/**
 * How long the cut-over of the move off `from`, whose map says its routers check the fence, still
 * waits before it may take the fence: until `fenceDelay` after this process published (or first
 * saw) the phase in which routers check, so that no router writes the set unchecked any more.
 */
export function fenceInMs(context: MoverContext, from: string): number {
  let since = context.checkedSince.get(from)
  if (since === undefined) {
    since = performance.now()
    context.checkedSince.set(from, since)
  }
  return Math.max(0, Math.ceil(since + context.fenceDelayMs - performance.now()))
}
