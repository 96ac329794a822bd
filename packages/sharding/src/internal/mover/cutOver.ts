import { InvalidArgumentError } from '../../errors.js'
import type { CutOverResult, SlotSet } from '../../slotMover.js'
import { argument } from '../check.js'
import { fenceTableDdl } from '../fence.js'
import { applyLog, catchUpPass, lastLogged, startChecks, stopChangeLog } from './changeLog.js'
import { describe, emitPhase, fenceInMs, type MoverContext, sleep, updateMap } from './context.js'
import { copySet } from './copy.js'
import { deleteProgress, loadProgress } from './progress.js'
import { type MoveSet, moveSet, rangesInSet, sameSpans, slotCondition } from './slotSet.js'
import { deleteSet, shapes } from './sql.js'
import { type TouchedRows, verifyBeforeFence, verifyTable, verifyTouched } from './verify.js'

/** The cut-over step ({@link SlotMover.cutOver}), run under the source's move lock. */
export async function cutOverStep(context: MoverContext, slotSet: SlotSet): Promise<CutOverResult> {
  const { store, connections, fenceTable } = context
  let map = await store.refresh()
  const set = moveSet(slotSet, map)
  const parts = rangesInSet(map, set)
  const target = parts[0]!.moving?.to ?? parts[0]!.shard
  if (parts.every((p) => p.moving === undefined && p.shard === target))
    return { map, rowsCopied: 0, rowsDiscarded: 0, rowsApplied: 0, rowsVerified: 0 }
  const from = parts[0]!.shard
  if (parts.some((p) => p.moving === undefined || p.moving.to !== target || p.shard !== from))
    argument.invalid(
      set.name,
      `slots moving from one shard to one shard (call begin first)`,
      describe(set),
    )
  let rowsCopied = 0
  let rowsDiscarded = 0
  let rowsApplied = 0
  let rowsVerified = 0
  const where = slotCondition(set)
  const states = (await connections.on(from, (c) =>
    connections.query(c, `SELECT state FROM \`${fenceTable}\` WHERE ${where.sql}`, where.values),
  )) as Array<{ state: string }>
  const alreadyMoved = states.length === set.size && states.every((r) => r.state === 'moved')
  if (!alreadyMoved) {
    const progress = await loadProgress(context, from)
    const copyDone =
      progress?.copyDone === true && progress.to === target && sameSpans(progress.spans, set.spans)
    if (parts.some((p) => p.moving!.phase !== 'fenced')) {
      if (parts.some((p) => p.moving!.phase === 'copying'))
        map = await startChecks(context, set, from, target)
      await awaitChecks(context, set, from, target, copyDone)
    }
    // After a bulk copy, what can be verified is verified before the fence (verify.ts): under it,
    // only the rows the log touched since.
    const checked =
      context.verify && copyDone ? await verifyBeforeFence(context, from, target, set) : undefined
    if (parts.some((p) => p.moving!.phase !== 'fenced')) {
      map = await updateMap(context, set, (part) => ({
        ...part,
        moving: { to: target, phase: 'fenced' },
      }))
      emitPhase(context, set, from, target, 'fenced')
    }
    const done = await fencedCopy(context, from, target, set, copyDone, checked?.touched)
    rowsCopied = done.copied
    rowsDiscarded = done.discarded
    rowsApplied = done.applied
    rowsVerified = done.verified + (checked?.rowsVerified ?? 0)
  }
  map = await updateMap(context, set, (part) => ({
    start: part.start,
    end: part.end,
    shard: target,
  }))
  // The move is over: with no other slot moving off the source, its progress row, the change log
  // and its triggers go.
  if (!map.ranges.some((r) => r.shard === from && r.moving !== undefined)) {
    await deleteProgress(context, from)
    await stopChangeLog(context, from)
  }
  context.checkedSince.delete(from)
  emitPhase(context, set, from, target, 'moved')
  return { map, rowsCopied, rowsDiscarded, rowsApplied, rowsVerified }
}

/** How often the cut-over applies the change log while it waits for every router to check. */
const CATCH_UP_EVERY_MS = 200

/**
 * Waits until `fenceDelay` after the routers of the set began checking the fence (no router
 * writes it unchecked any more), applying the change log meanwhile after a bulk copy, so the
 * tail left for the fence stays short.
 */
async function awaitChecks(
  context: MoverContext,
  set: MoveSet,
  from: string,
  to: string,
  copyDone: boolean,
): Promise<void> {
  for (let wait = fenceInMs(context, from); wait > 0; wait = fenceInMs(context, from)) {
    if (!copyDone) {
      await sleep(wait)
      continue
    }
    const started = performance.now()
    await catchUpPass(context, set, from, to, context.closing)
    const left = wait - (performance.now() - started)
    if (left > 0) await sleep(Math.min(left, CATCH_UP_EVERY_MS))
  }
}

/**
 * The fenced part of the cut-over: lock the fence rows, bring the target up to date (the
 * change log's entries after a bulk copy, else a whole copy of the set), verify, mark moved,
 * commit.
 */
async function fencedCopy(
  context: MoverContext,
  from: string,
  to: string,
  set: MoveSet,
  copyDone: boolean,
  touched: TouchedRows | undefined,
): Promise<{ copied: number; discarded: number; applied: number; verified: number }> {
  const { connections, fenceTable } = context
  const where = slotCondition(set)
  // Read before the lock: the fence is held for the tail, the comparison and the commit only.
  const tableShapes = await connections.on(from, (source) => shapes(context, source))
  await connections.on(to, (target) => connections.query(target, fenceTableDdl(fenceTable)))
  return connections.on(from, async (fence) => {
    await connections.query(fence, 'START TRANSACTION')
    let committed = false
    try {
      const locked = (await connections.query(
        fence,
        `SELECT slot FROM \`${fenceTable}\` WHERE ${where.sql} FOR UPDATE`,
        where.values,
      )) as unknown[]
      if (locked.length !== set.size)
        throw new InvalidArgumentError(
          `the fence rows of slots ${describe(set)} on shard "${from}" are missing: run begin() again`,
        )
      let copied = 0
      let discarded = 0
      let applied = 0
      let verified = 0
      await connections.on(to, async (target) => {
        // The target's own fence rows of the set (from a move that took these slots off it
        // earlier) would refuse its new writers' checks.
        await connections.query(
          target,
          `DELETE FROM \`${fenceTable}\` WHERE ${where.sql}`,
          where.values,
        )
        // Reads on another connection of the source see every committed write: the checked
        // writers of the set committed before the lock was granted, and none can start now.
        await connections.on(from, async (source) => {
          if (copyDone) {
            // Every change of the set is in the log up to its last entry now: writers of the
            // set took their log entry before they committed, and committed before the lock.
            const done = await applyLog(context, source, target, tableShapes, set, {
              upTo: await lastLogged(context, source),
              throttle: false,
              touched,
            })
            applied = done.applied
          } else {
            // No bulk copy: what a failed run left on the target goes (rows deleted on the
            // source since must not come back), then the whole set is copied.
            for (const shape of tableShapes.values()) {
              discarded += await deleteSet(context, target, shape, set)
              copied += await copySet(context, source, target, shape, set)
            }
          }
          if (touched !== undefined)
            verified += await verifyTouched(context, source, target, touched, set, {
              recopy: false,
            })
          else if (context.verify)
            for (const shape of tableShapes.values())
              verified += await verifyTable(context, source, target, shape, set)
        })
      })
      await connections.query(
        fence,
        `UPDATE \`${fenceTable}\` SET state = 'moved', moved_to = ? WHERE ${where.sql}`,
        [to, ...where.values],
      )
      await connections.query(fence, 'COMMIT')
      committed = true
      return { copied, discarded, applied, verified }
    } finally {
      if (!committed) await connections.query(fence, 'ROLLBACK').catch(() => {})
    }
  })
}
