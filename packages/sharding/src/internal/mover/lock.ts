import type { PoolConnection } from 'mysql2/promise'
import { ShardUnavailableError, SlotMoveBusyError } from '../../errors.js'
import type { SlotSet } from '../../slotMover.js'
import { isConnectionError } from '../server.js'
import type { MoverContext } from './context.js'
import { moveSet, rangesInSet } from './slotSet.js'

const LOCK = "CONCAT('ballast_slot_move:', DATABASE())"

/**
 * Runs a step holding the move lock of the set's source (the owner of its first slot) (`GET_LOCK` on a connection of its
 * primary, named after its database): one step of one move off a source at a time, across
 * processes. A process that dies drops its connection, and the lock with it.
 * @throws SlotMoveBusyError (retryable) if another step holds the lock.
 */
export async function exclusive<R>(
  context: MoverContext,
  slotSet: SlotSet,
  operation: string,
  step: () => Promise<R>,
): Promise<R> {
  const { connections } = context
  const map = await context.store.refresh()
  const source = rangesInSet(map, moveSet(slotSet, map))[0]!.shard
  const connection: PoolConnection = await connections.connect(source)
  // The lock's connection is only held while the step runs: the step's own errors pass through
  // as they are (they name their own shard).
  let broken = false
  try {
    let got: unknown
    try {
      ;[{ got }] = (await connections.query(connection, `SELECT GET_LOCK(${LOCK}, 0) AS got`)) as [
        { got: unknown },
      ]
    } catch (error) {
      if (!isConnectionError(error)) throw error
      broken = true
      throw new ShardUnavailableError(
        source,
        'primary',
        `primary of shard "${source}" failed during a slot move`,
        { cause: error },
      )
    }
    if (Number(got) !== 1) throw new SlotMoveBusyError(source, operation)
    try {
      return await step()
    } finally {
      await connections.query(connection, `SELECT RELEASE_LOCK(${LOCK})`).catch(() => {
        broken = true
      })
    }
  } finally {
    if (broken) connection.destroy()
    else connection.release()
  }
}
