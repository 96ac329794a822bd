import type { PoolConnection } from 'mysql2/promise'
import type { CopyResult, SlotSet, StepOptions } from '../../slotMover.js'
import { type MoverContext, moveFields, moving } from './context.js'
import type { MoveLock } from './lock.js'
import { loadProgress, type MoveProgress, saveProgress } from './progress.js'
import { holds, type MoveSet, sameSpans } from './slotSet.js'
import { scan, shapes, type TableShape, writeRows } from './sql.js'
import { rideOut } from './stall.js'

/**
 * The copy step ({@link SlotMover.copy}), run under the source's move lock: the set's rows in
 * primary-key chunks (one scan of each table for every span of the set), its place kept in the
 * store after each chunk.
 */
export async function copyStep(
  context: MoverContext,
  slotSet: SlotSet,
  { signal }: StepOptions,
  lock: MoveLock,
): Promise<CopyResult> {
  const { from, to, set } = await moving(context, slotSet, 'copy', { whole: true })
  const { connections, events } = context
  const kept = await loadProgress(context, from)
  // The progress begin() wrote for this move, or the place a previous run of the copy reached.
  const progress: MoveProgress =
    kept !== undefined && kept.to === to && sameSpans(kept.spans, set.spans)
      ? kept
      : { from, to, spans: [...set.spans], copied: {}, rowsCopied: 0, copyDone: false }
  const fields = moveFields(set, from, to)
  let rowsCopied = 0
  // A shard that stops answering is waited for: run again, the copy goes on after the last chunk
  // kept (a chunk written but not yet kept is written again, replacing the same rows).
  await rideOut(context, 'copy', fields, lock, signal, () =>
    connections.on(from, (source) =>
      connections.on(to, async (target) => {
        const pace = await context.throttle.start(source)
        for (const shape of (await shapes(context, source)).values()) {
          const reached = progress.copied[shape.name]
          if (reached === true) continue
          await scan(
            context,
            source,
            shape,
            '*',
            async (rows) => {
              const moved = rows.filter((row) => holds(set, row[shape.key]))
              if (moved.length > 0) await writeRows(context, target, shape, moved)
              rowsCopied += moved.length
              progress.rowsCopied += moved.length
              const tail = rows[rows.length - 1]!
              progress.copied[shape.name] = shape.primaryKey.map((c) => tail[c])
              await saveProgress(context, progress)
              if (events.has('chunk-copied'))
                events.emit('chunk-copied', {
                  ...fields,
                  table: shape.name,
                  rows: moved.length,
                  totalRows: progress.rowsCopied,
                })
              // The chunk is written and its place kept: a copy stopped here resumes after it.
              signal?.throwIfAborted()
              await pace(signal)
            },
            reached,
          )
          progress.copied[shape.name] = true
          await saveProgress(context, progress)
        }
      }),
    ),
  )
  progress.copyDone = true
  await saveProgress(context, progress)
  return { rowsCopied, totalRowsCopied: progress.rowsCopied }
}

/** Copies the set's rows of a table in one go (the cut-over's copy when no bulk copy ran), with plain inserts. */
export async function copySet(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  set: MoveSet,
): Promise<number> {
  let copied = 0
  await scan(context, source, shape, '*', async (rows) => {
    const moved = rows.filter((row) => holds(set, row[shape.key]))
    if (moved.length === 0) return
    const columns = Object.keys(moved[0]!)
    await context.connections.query(
      target,
      `INSERT INTO ${shape.quoted} (${columns.map((c) => `\`${c.replaceAll('`', '``')}\``).join(', ')}) VALUES ?`,
      [moved.map((row) => columns.map((c) => row[c]))],
    )
    copied += moved.length
  })
  return copied
}
