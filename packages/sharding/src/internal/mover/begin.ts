import { SlotMapConflictError } from '../../errors.js'
import type { SlotMap } from '../../slotMap.js'
import type { SlotSet } from '../../slotMover.js'
import { argument } from '../check.js'
import { SHARD_ID } from '../slotRanges.js'
import { startChangeLog } from './changeLog.js'
import { describe, emitPhase, type MoverContext } from './context.js'
import { saveProgress } from './progress.js'
import { moveSet, rangesInSet, rewriteSet } from './slotSet.js'
import { deleteSetOn, writeFence } from './sql.js'

/** The begin step ({@link SlotMover.begin}), run under the source's move lock. */
export async function beginStep(
  context: MoverContext,
  slotSet: SlotSet,
  to: string,
): Promise<SlotMap> {
  const { store } = context
  argument.string('to', to, { pattern: SHARD_ID })
  if (!context.connections.has(to)) argument.invalid('to', "one of the mover's shards", to)
  for (let attempt = 0; ; attempt++) {
    const map = await store.refresh()
    const set = moveSet(slotSet, map)
    const parts = rangesInSet(map, set)
    const from = parts[0]!.shard
    if (parts.some((p) => p.shard !== from))
      argument.invalid(
        set.name,
        'slots owned by one shard',
        `slots of ${[...new Set(parts.map((p) => p.shard))].join(', ')}`,
      )
    if (from === to) argument.invalid('to', `a shard other than the span's owner "${from}"`, to)
    if (parts.some((p) => p.moving !== undefined && p.moving.to !== to))
      argument.invalid(
        set.name,
        'slots not already moving elsewhere',
        `slots moving to ${parts.find((p) => p.moving)!.moving!.to}`,
      )
    if (parts.every((p) => p.moving?.to === to)) return map
    // One change log per source: one move off a shard at a time.
    const busy = map.ranges.find((r) => {
      if (r.shard !== from || r.moving === undefined) return false
      for (let slot = r.start; slot < r.end; slot++) if (set.member[slot] !== 1) return true
      return false
    })
    if (busy !== undefined)
      argument.invalid(
        set.name,
        `slots of a shard no other range is moving off (one move per source at a time)`,
        `${describe(set)} while ${busy.start}-${busy.end} moves off "${from}"`,
      )
    // A new move off this source: whatever this process knew of an earlier one's checks is void.
    context.checkedSince.delete(from)
    await writeFence(context, from, set, 'copying', to)
    // Nothing of this move has been copied yet: what the target holds of the set is left from
    // an earlier attempt and goes; the change log starts now, before any row is copied.
    await deleteSetOn(context, to, set)
    await startChangeLog(context, from)
    await saveProgress(context, {
      from,
      to,
      spans: [...set.spans],
      copied: {},
      rowsCopied: 0,
      copyDone: false,
    })
    try {
      // Every span of the set in one map version: routers see the whole move or none of it.
      const next = await store.update(
        map.version,
        rewriteSet(map, set, (part) => ({ ...part, moving: { to, phase: 'copying' } })),
      )
      emitPhase(context, set, from, to, 'copying')
      return next
    } catch (error) {
      if (!(error instanceof SlotMapConflictError) || attempt >= 4) throw error
    }
  }
}
