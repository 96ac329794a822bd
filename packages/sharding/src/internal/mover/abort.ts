import type { SlotMap } from '../../slotMap.js'
import type { SlotSpan } from '../../slotMover.js'
import { argument } from '../check.js'
import { rangesIn, rewrite } from '../slotRanges.js'
import { stopChangeLog } from './changeLog.js'
import { checkSpan, emitPhase, type MoverContext, moving } from './context.js'
import { deleteProgress, loadProgress } from './progress.js'
import { deleteSpanOn } from './sql.js'

/** The abort step ({@link SlotMover.abort}), run under the source's move lock. */
export async function abortStep(
  context: MoverContext,
  span: SlotSpan,
): Promise<{ map: SlotMap; rowsDiscarded: number }> {
  const { store, connections, fenceTable } = context
  let map = await store.refresh()
  const { start, end } = checkSpan(span, map)
  const parts = rangesIn(map, start, end)
  const progress = await loadProgress(context, start, end)
  let from: string
  let to: string
  if (parts.every((p) => p.moving === undefined)) {
    // The map was given back by a run that did not finish its clean-up.
    const left = progress?.from !== undefined && progress.to !== undefined ? progress : undefined
    if (left === undefined || parts.some((p) => p.shard !== left.from))
      return argument.invalid('span', 'slots that are moving (begin() first)', `${start}-${end}`)
    from = left.from!
    to = left.to!
  } else {
    const move = await moving(context, span, 'abort')
    from = move.from
    to = move.to
    map = await connections.on(from, async (fence) => {
      await connections.query(fence, 'START TRANSACTION')
      let committed = false
      try {
        const states = (await connections.query(
          fence,
          `SELECT state FROM \`${fenceTable}\` WHERE slot >= ? AND slot < ? FOR UPDATE`,
          [start, end],
        )) as Array<{ state: string }>
        if (states.some((r) => r.state === 'moved'))
          argument.invalid(
            'span',
            'a move not yet cut over (run cutOver() to finish it)',
            `${start}-${end}`,
          )
        const back = await store.update(
          move.map.version,
          rewrite(move.map, start, end, (part) => ({
            start: part.start,
            end: part.end,
            shard: from,
          })),
        )
        await connections.query(
          fence,
          `DELETE FROM \`${fenceTable}\` WHERE slot >= ? AND slot < ?`,
          [start, end],
        )
        await connections.query(fence, 'COMMIT')
        committed = true
        return back
      } finally {
        if (!committed) await connections.query(fence, 'ROLLBACK').catch(() => {})
      }
    })
  }
  // A run that died after giving the map back may have left the fence rows: they go.
  await connections.on(from, (source) =>
    connections.query(
      source,
      `DELETE FROM \`${fenceTable}\` WHERE slot >= ? AND slot < ? AND state = 'copying'`,
      [start, end],
    ),
  )
  const rowsDiscarded = await deleteSpanOn(context, to, map.slots, start, end)
  if (!map.ranges.some((r) => r.shard === from && r.moving !== undefined))
    await stopChangeLog(context, from)
  await deleteProgress(context, start, end)
  emitPhase(context, start, end, from, to, 'aborted')
  return { map, rowsDiscarded }
}

/** The purge ({@link SlotMover.purge}): the rows of a span cut over away from `from`, deleted there. */
export async function purgeStep(
  context: MoverContext,
  span: SlotSpan,
  from: string,
): Promise<{ rowsDeleted: number }> {
  if (!context.connections.has(from)) argument.invalid('from', "one of the mover's shards", from)
  const map = await context.store.refresh()
  const { start, end } = checkSpan(span, map)
  const parts = rangesIn(map, start, end)
  if (parts.some((p) => p.shard === from || p.moving !== undefined))
    argument.invalid(
      'span',
      `slots that shard "${from}" no longer owns and that are not moving`,
      `${start}-${end}`,
    )
  return { rowsDeleted: await deleteSpanOn(context, from, map.slots, start, end) }
}
