import type { SlotMap } from '../../slotMap.js'
import type { SlotSet } from '../../slotMover.js'
import { argument } from '../check.js'
import { stopChangeLog } from './changeLog.js'
import { describe, emitPhase, type MoverContext, moving } from './context.js'
import { deleteProgress, loadProgress } from './progress.js'
import { covers, type MoveSet, moveSet, rangesInSet, rewriteSet, slotCondition } from './slotSet.js'
import { deleteSetOn } from './sql.js'

/** The abort step ({@link SlotMover.abort}), run under the source's move lock. */
export async function abortStep(
  context: MoverContext,
  slotSet: SlotSet,
): Promise<{ map: SlotMap; rowsDiscarded: number }> {
  const { store, connections, fenceTable } = context
  let map = await store.refresh()
  let set: MoveSet = moveSet(slotSet, map)
  const parts = rangesInSet(map, set)
  let from: string
  let to: string
  if (parts.every((p) => p.moving === undefined)) {
    // The map was given back by a run that did not finish its clean-up: the source's progress
    // row still names the move.
    const owner = parts[0]!.shard
    const left = parts.every((p) => p.shard === owner)
      ? await loadProgress(context, owner)
      : undefined
    if (left === undefined || !covers(left.spans, set))
      return argument.invalid(set.name, 'slots that are moving (begin() first)', describe(set))
    from = left.from
    to = left.to
  } else {
    const move = await moving(context, slotSet, 'abort')
    from = move.from
    to = move.to
    set = move.set
    const where = slotCondition(set)
    map = await connections.on(from, async (fence) => {
      await connections.query(fence, 'START TRANSACTION')
      let committed = false
      try {
        const states = (await connections.query(
          fence,
          `SELECT state FROM \`${fenceTable}\` WHERE ${where.sql} FOR UPDATE`,
          where.values,
        )) as Array<{ state: string }>
        if (states.some((r) => r.state === 'moved'))
          argument.invalid(
            set.name,
            'a move not yet cut over (run cutOver() to finish it)',
            describe(set),
          )
        const back = await store.update(
          move.map.version,
          rewriteSet(move.map, set, (part) => ({
            start: part.start,
            end: part.end,
            shard: from,
          })),
        )
        await connections.query(
          fence,
          `DELETE FROM \`${fenceTable}\` WHERE ${where.sql}`,
          where.values,
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
  const where = slotCondition(set)
  await connections.on(from, (source) =>
    connections.query(
      source,
      `DELETE FROM \`${fenceTable}\` WHERE ${where.sql} AND state = 'copying'`,
      where.values,
    ),
  )
  const rowsDiscarded = await deleteSetOn(context, to, set)
  if (!map.ranges.some((r) => r.shard === from && r.moving !== undefined)) {
    await stopChangeLog(context, from)
    await deleteProgress(context, from)
  }
  context.checkedSince.delete(from)
  emitPhase(context, set, from, to, 'aborted')
  return { map, rowsDiscarded }
}
