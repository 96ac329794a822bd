import type { MovePhase } from '../../slotMap.js'
import type { MoveStatus } from '../../slotMover.js'
import type { MoverContext } from './context.js'
import { listProgress } from './progress.js'
import { sameSpans } from './slotSet.js'

const ORDER: readonly MovePhase[] = ['copying', 'catching-up', 'fenced']

/** Every move in progress: the map's moving ranges by source, with their progress rows. */
export async function moveStatuses(context: MoverContext): Promise<MoveStatus[]> {
  const map = await context.store.refresh()
  const moves = new Map<string, MoveStatus>()
  for (const range of map.ranges) {
    if (range.moving === undefined) continue
    let move = moves.get(range.shard)
    if (move === undefined) {
      move = {
        from: range.shard,
        to: range.moving.to,
        spans: [],
        slots: 0,
        phase: range.moving.phase,
        rowsCopied: 0,
        copyDone: false,
      }
      moves.set(range.shard, move)
    }
    const last = move.spans[move.spans.length - 1]
    if (last !== undefined && last.end === range.start) last.end = range.end
    else move.spans.push({ start: range.start, end: range.end })
    move.slots += range.end - range.start
    if (ORDER.indexOf(range.moving.phase) < ORDER.indexOf(move.phase))
      move.phase = range.moving.phase
  }
  for (const progress of await listProgress(context)) {
    const move = moves.get(progress.from)
    if (move === undefined || move.to !== progress.to) continue
    move.rowsCopied = progress.rowsCopied
    move.copyDone = progress.copyDone && sameSpans(progress.spans, move.spans)
  }
  return [...moves.values()]
}
