import type { PoolConnection } from 'mysql2/promise'
import type { CopyResult, SlotSpan } from '../../slotMover.js'
import { type MoverContext, moving } from './context.js'
import { loadProgress, saveProgress } from './progress.js'
import { inSpan, scan, shapes, type TableShape, writeRows } from './sql.js'

/**
 * The copy step ({@link SlotMover.copy}), run under the source's move lock: the span's rows in
 * primary-key chunks, its place kept in the store after each chunk.
 */
export async function copyStep(context: MoverContext, span: SlotSpan): Promise<CopyResult> {
  const { from, to, start, end, slots } = await moving(context, span, 'copy')
  const { connections, events } = context
  const progress = (await loadProgress(context, start, end)) ?? {
    copied: {},
    rowsCopied: 0,
    copyDone: false,
  }
  let rowsCopied = 0
  await connections.on(from, (source) =>
    connections.on(to, async (target) => {
      for (const shape of (await shapes(context, source)).values()) {
        const reached = progress.copied[shape.name]
        if (reached === true) continue
        await scan(
          context,
          source,
          shape,
          '*',
          async (rows) => {
            const moved = rows.filter((row) => inSpan(row[shape.key], slots, start, end))
            if (moved.length > 0) await writeRows(context, target, shape, moved)
            rowsCopied += moved.length
            progress.rowsCopied += moved.length
            const tail = rows[rows.length - 1]!
            progress.copied[shape.name] = shape.primaryKey.map((c) => tail[c])
            await saveProgress(context, start, end, progress)
            if (events.has('chunk-copied'))
              events.emit('chunk-copied', {
                start,
                end,
                table: shape.name,
                rows: moved.length,
                totalRows: progress.rowsCopied,
              })
            await context.throttle()
          },
          reached,
        )
        progress.copied[shape.name] = true
        await saveProgress(context, start, end, progress)
      }
    }),
  )
  progress.copyDone = true
  await saveProgress(context, start, end, progress)
  return { rowsCopied, totalRowsCopied: progress.rowsCopied }
}

/** Copies the span's rows of a table in one go (the cut-over's copy when no bulk copy ran), with plain inserts. */
export async function copySpan(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  slots: number,
  start: number,
  end: number,
): Promise<number> {
  let copied = 0
  await scan(context, source, shape, '*', async (rows) => {
    const moved = rows.filter((row) => inSpan(row[shape.key], slots, start, end))
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
