import { InvalidArgumentError, SlotMapConflictError } from '../../errors.js'
import type { CutOverResult, SlotSpan } from '../../slotMover.js'
import { argument } from '../check.js'
import { fenceTableDdl } from '../fence.js'
import { rangesIn, rewrite } from '../slotRanges.js'
import { applyLog, lastLogged, stopChangeLog } from './changeLog.js'
import { checkSpan, emitPhase, type MoverContext } from './context.js'
import { copySpan } from './copy.js'
import { deleteProgress, loadProgress } from './progress.js'
import { deleteSpan, shapes } from './sql.js'
import { verifyTable } from './verify.js'

/** The cut-over step ({@link SlotMover.cutOver}), run under the source's move lock. */
export async function cutOverStep(context: MoverContext, span: SlotSpan): Promise<CutOverResult> {
  const { store, connections, fenceTable } = context
  let map = await store.refresh()
  const { start, end } = checkSpan(span, map)
  const parts = rangesIn(map, start, end)
  const target = parts[0]!.moving?.to ?? parts[0]!.shard
  if (parts.every((p) => p.moving === undefined && p.shard === target))
    return { map, rowsCopied: 0, rowsDiscarded: 0, rowsApplied: 0, rowsVerified: 0 }
  const from = parts[0]!.shard
  if (parts.some((p) => p.moving === undefined || p.moving.to !== target || p.shard !== from))
    argument.invalid(
      'span',
      `slots moving from one shard to one shard (call begin first)`,
      `${start}-${end}`,
    )
  let rowsCopied = 0
  let rowsDiscarded = 0
  let rowsApplied = 0
  let rowsVerified = 0
  const states = (await connections.on(from, (c) =>
    connections.query(c, `SELECT state FROM \`${fenceTable}\` WHERE slot >= ? AND slot < ?`, [
      start,
      end,
    ]),
  )) as Array<{ state: string }>
  const alreadyMoved = states.length === end - start && states.every((r) => r.state === 'moved')
  if (!alreadyMoved) {
    if (parts.some((p) => p.moving!.phase !== 'fenced')) {
      map = await store.update(
        map.version,
        rewrite(map, start, end, (part) => ({
          ...part,
          moving: { to: target, phase: 'fenced' },
        })),
      )
      emitPhase(context, start, end, from, target, 'fenced')
    }
    const done = await fencedCopy(context, from, target, start, end)
    rowsCopied = done.copied
    rowsDiscarded = done.discarded
    rowsApplied = done.applied
    rowsVerified = done.verified
  }
  for (let attempt = 0; ; attempt++) {
    map = await store.refresh()
    try {
      map = await store.update(
        map.version,
        rewrite(map, start, end, (part) => ({ start: part.start, end: part.end, shard: target })),
      )
      // The move is over: its progress row and, with no other move off the source, the change
      // log and its triggers go.
      await deleteProgress(context, start, end)
      if (!map.ranges.some((r) => r.shard === from && r.moving !== undefined))
        await stopChangeLog(context, from)
      emitPhase(context, start, end, from, target, 'moved')
      return { map, rowsCopied, rowsDiscarded, rowsApplied, rowsVerified }
    } catch (error) {
      if (!(error instanceof SlotMapConflictError) || attempt >= 4) throw error
    }
  }
}

/**
 * The fenced part of the cut-over: lock the fence rows, bring the target up to date (the
 * change log's entries after a bulk copy, else a whole copy of the span), verify, mark moved,
 * commit.
 */
async function fencedCopy(
  context: MoverContext,
  from: string,
  to: string,
  start: number,
  end: number,
): Promise<{ copied: number; discarded: number; applied: number; verified: number }> {
  const { connections, fenceTable } = context
  const slots = context.store.current().slots
  const progress = await loadProgress(context, start, end)
  return connections.on(from, async (fence) => {
    await connections.query(fence, 'START TRANSACTION')
    let committed = false
    try {
      const locked = (await connections.query(
        fence,
        `SELECT slot FROM \`${fenceTable}\` WHERE slot >= ? AND slot < ? FOR UPDATE`,
        [start, end],
      )) as unknown[]
      if (locked.length !== end - start)
        throw new InvalidArgumentError(
          `the fence rows of slots ${start}-${end} on shard "${from}" are missing: run begin() again`,
        )
      let copied = 0
      let discarded = 0
      let applied = 0
      let verified = 0
      await connections.on(to, async (target) => {
        // The target's own fence rows of the span (from a move that took these slots off it
        // earlier) would refuse its new writers' checks.
        await connections.query(target, fenceTableDdl(fenceTable))
        await connections.query(
          target,
          `DELETE FROM \`${fenceTable}\` WHERE slot >= ? AND slot < ?`,
          [start, end],
        )
        // Reads on another connection of the source see every committed write: the checked
        // writers of the span committed before the lock was granted, and none can start now.
        await connections.on(from, async (source) => {
          const tableShapes = await shapes(context, source)
          if (progress?.copyDone === true) {
            // Every change of the span is in the log up to its last entry now: writers of the
            // span took their log entry before they committed, and committed before the lock.
            const done = await applyLog(context, source, target, tableShapes, slots, start, end, {
              upTo: await lastLogged(context, source),
              throttle: false,
            })
            applied = done.applied
          } else {
            // No bulk copy: what a failed run left on the target goes (rows deleted on the
            // source since must not come back), then the whole span is copied.
            for (const shape of tableShapes.values()) {
              discarded += await deleteSpan(context, target, shape, slots, start, end)
              copied += await copySpan(context, source, target, shape, slots, start, end)
            }
          }
          if (context.verify)
            for (const shape of tableShapes.values())
              verified += await verifyTable(context, source, target, shape, slots, start, end)
        })
      })
      await connections.query(
        fence,
        `UPDATE \`${fenceTable}\` SET state = 'moved', moved_to = ? WHERE slot >= ? AND slot < ?`,
        [to, start, end],
      )
      await connections.query(fence, 'COMMIT')
      committed = true
      return { copied, discarded, applied, verified }
    } finally {
      if (!committed) await connections.query(fence, 'ROLLBACK').catch(() => {})
    }
  })
}
