import { SlotMapConflictError } from '../../errors.js'
import type { SlotMap } from '../../slotMap.js'
import type { SlotSpan } from '../../slotMover.js'
import { argument } from '../check.js'
import { rangesIn, rewrite, SHARD_ID } from '../slotRanges.js'
import { startChangeLog } from './changeLog.js'
import { checkSpan, emitPhase, type MoverContext, sleep } from './context.js'
import { saveProgress } from './progress.js'
import { deleteSpanOn, writeFence } from './sql.js'

/** The begin step ({@link SlotMover.begin}), run under the source's move lock. */
export async function beginStep(
  context: MoverContext,
  span: SlotSpan,
  to: string,
): Promise<SlotMap> {
  const { store } = context
  argument.string('to', to, { pattern: SHARD_ID })
  if (!context.connections.has(to)) argument.invalid('to', "one of the mover's shards", to)
  for (let attempt = 0; ; attempt++) {
    const map = await store.refresh()
    const { start, end } = checkSpan(span, map)
    const parts = rangesIn(map, start, end)
    const from = parts[0]!.shard
    if (parts.some((p) => p.shard !== from))
      argument.invalid(
        'span',
        'slots owned by one shard',
        `slots of ${[...new Set(parts.map((p) => p.shard))].join(', ')}`,
      )
    if (from === to) argument.invalid('to', `a shard other than the span's owner "${from}"`, to)
    if (parts.some((p) => p.moving !== undefined && p.moving.to !== to))
      argument.invalid(
        'span',
        'slots not already moving elsewhere',
        `slots moving to ${parts.find((p) => p.moving)!.moving!.to}`,
      )
    if (parts.every((p) => p.moving?.to === to)) {
      await sleep(context.fenceDelayMs)
      return map
    }
    // One change log per source: one move off a shard at a time.
    const busy = map.ranges.find(
      (r) => r.shard === from && r.moving !== undefined && (r.end <= start || r.start >= end),
    )
    if (busy !== undefined)
      argument.invalid(
        'span',
        `slots of a shard no other range is moving off (one move per source at a time)`,
        `${start}-${end} while ${busy.start}-${busy.end} moves off "${from}"`,
      )
    await writeFence(context, from, start, end, 'copying', to)
    // Nothing of this move has been copied yet: what the target holds of the span is left from
    // an earlier attempt and goes; the change log starts now, before any row is copied.
    await deleteSpanOn(context, to, map.slots, start, end)
    await startChangeLog(context, from)
    await saveProgress(context, start, end, {
      from,
      to,
      copied: {},
      rowsCopied: 0,
      copyDone: false,
    })
    try {
      const next = await store.update(
        map.version,
        rewrite(map, start, end, (part) => ({ ...part, moving: { to, phase: 'copying' } })),
      )
      emitPhase(context, start, end, from, to, 'copying')
      await sleep(context.fenceDelayMs)
      return next
    } catch (error) {
      if (!(error instanceof SlotMapConflictError) || attempt >= 4) throw error
    }
  }
}
