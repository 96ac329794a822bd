import { type Emitter, observe } from '@ballast/shared'
import type { Meter } from '@opentelemetry/api'
import type { MoveStep, SlotMoverEvents } from '../../slotMover.js'

/** The mover's observed instruments, per move (`ballast.sharding.slot_mover.from` and `.to`). */
const INSTRUMENTS = {
  'ballast.sharding.slot_mover.rows_copied': {
    kind: 'counter',
    description: 'Rows of a move written to its target by the copy, by this process',
    unit: '{row}',
  },
  'ballast.sharding.slot_mover.log_lag': {
    kind: 'gauge',
    description: "Change log entries left on the source after a move's last catch-up pass",
    unit: '{entry}',
  },
  'ballast.sharding.slot_mover.phase': {
    kind: 'gauge',
    description:
      'A move in this process: 1 on the point of its phase (copying, catching-up, fenced, moved, aborted)',
    unit: '{move}',
  },
  'ballast.sharding.slot_mover.stalls': {
    kind: 'counter',
    description: 'Retries of a copy or catch-up waiting for a shard that stopped answering',
    unit: '{retry}',
  },
} as const

interface MoveCounters {
  from: string
  to: string
  rowsCopied: number
  lagEntries: number | undefined
  phase: MoveStep | undefined
  stalls: number
}

/**
 * The mover's metrics: counters kept from its own events (the steps pay a map lookup per event)
 * and read when the SDK collects. Returns the function that stops them (from `close()`).
 */
export function moverMetrics(meter: Meter, events: Emitter<SlotMoverEvents>): () => void {
  const moves = new Map<string, MoveCounters>()
  const of = (from: string, to: string) => {
    const key = `${from}\u0000${to}`
    let move = moves.get(key)
    if (move === undefined) {
      move = { from, to, rowsCopied: 0, lagEntries: undefined, phase: undefined, stalls: 0 }
      moves.set(key, move)
    }
    return move
  }
  const offs = [
    events.on('chunk-copied', (e) => {
      of(e.from, e.to).rowsCopied += e.rows
    }),
    events.on('log-applied', (e) => {
      of(e.from, e.to).lagEntries = e.lagEntries
    }),
    events.on('phase-changed', (e) => {
      of(e.from, e.to).phase = e.phase
    }),
    events.on('stalled', (e) => {
      of(e.from, e.to).stalls++
    }),
  ]
  const stop = observe(meter, INSTRUMENTS, (record) => {
    for (const move of moves.values()) {
      const attributes = {
        'ballast.sharding.slot_mover.from': move.from,
        'ballast.sharding.slot_mover.to': move.to,
      }
      record('ballast.sharding.slot_mover.rows_copied', move.rowsCopied, attributes)
      record('ballast.sharding.slot_mover.stalls', move.stalls, attributes)
      if (move.lagEntries !== undefined)
        record('ballast.sharding.slot_mover.log_lag', move.lagEntries, attributes)
      if (move.phase !== undefined)
        record('ballast.sharding.slot_mover.phase', 1, {
          ...attributes,
          'ballast.sharding.slot_mover.phase': move.phase,
        })
    }
  })
  return () => {
    stop()
    for (const off of offs) off()
  }
}
