import type { SlotSet } from '../../slotMover.js'
import { argument } from '../check.js'
import { describe, type MoverContext } from './context.js'
import { moveSet, rangesInSet } from './slotSet.js'
import { deleteSetOn } from './sql.js'

/** The purge ({@link SlotMover.purge}): the rows of a set cut over away from `from`, deleted there. */
export async function purgeStep(
  context: MoverContext,
  slotSet: SlotSet,
  from: string,
): Promise<{ rowsDeleted: number }> {
  if (!context.connections.has(from)) argument.invalid('from', "one of the mover's shards", from)
  const map = await context.store.refresh()
  const set = moveSet(slotSet, map)
  if (rangesInSet(map, set).some((p) => p.shard === from || p.moving !== undefined))
    argument.invalid(
      set.name,
      `slots that shard "${from}" no longer owns and that are not moving`,
      describe(set),
    )
  return { rowsDeleted: await deleteSetOn(context, from, set) }
}
