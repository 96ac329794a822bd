import type { PoolConnection } from 'mysql2/promise'
import { ShardUnavailableError, SlotMoveBusyError } from '../../errors.js'
import type { SlotSet } from '../../slotMover.js'
import { isConnectionError } from '../server.js'
import type { MoverContext } from './context.js'
import { moveSet, rangesInSet } from './slotSet.js'

const LOCK = "CONCAT('ballast_slot_move:', DATABASE())"

/** The move lock a step holds, as the step sees it. */
export interface MoveLock {
  /** The source whose lock it is. */
  readonly source: string
  /**
   * Makes sure the lock is still this step's, after an outage: takes it again on a new
   * connection if its connection dropped (the server released it then).
   * @throws SlotMoveBusyError if another mover took it meanwhile.
   * @throws ShardUnavailableError if the source still does not answer.
   */
  ensure(): Promise<void>
}

/**
 * Runs a step holding the move lock of the set's source, the owner of its first slot
 * (`GET_LOCK` on a connection of its primary, named after its database): one step of one move
 * off a source at a time, across processes. A process that dies drops its connection, and the
 * lock with it.
 * @throws SlotMoveBusyError (retryable) if another step holds the lock.
 */
export async function exclusive<R>(
  context: MoverContext,
  slotSet: SlotSet,
  operation: string,
  step: (lock: MoveLock) => Promise<R>,
): Promise<R> {
  const { connections } = context
  const map = await context.store.refresh()
  const source = rangesInSet(map, moveSet(slotSet, map))[0]!.shard
  let connection: PoolConnection | undefined = await connections.connect(source)
  // The lock's connection is only held while the step runs: the step's own errors pass through
  // as they are (they name their own shard).
  const take = async () => {
    connection ??= await connections.connect(source)
    let got: unknown
    try {
      // Taken once per connection: MariaDB's GET_LOCK is re-entrant, and a second hold would
      // outlive the step's one RELEASE_LOCK on a pooled connection.
      ;[{ got }] = (await connections.query(
        connection,
        `SELECT IF(IS_USED_LOCK(${LOCK}) <=> CONNECTION_ID(), 1, GET_LOCK(${LOCK}, 0)) AS got`,
      )) as [{ got: unknown }]
    } catch (error) {
      // connections.query names a failed connection's shard; a dead connection holds no lock.
      if (!(error instanceof ShardUnavailableError) && !isConnectionError(error)) throw error
      connection.destroy()
      connection = undefined
      if (error instanceof ShardUnavailableError) throw error
      throw new ShardUnavailableError(
        source,
        'primary',
        `primary of shard "${source}" failed during a slot move`,
        { cause: error },
      )
    }
    if (Number(got) !== 1) throw new SlotMoveBusyError(source, operation)
  }
  try {
    await take()
    try {
      return await step({ source, ensure: take })
    } finally {
      if (connection !== undefined)
        await connections.query(connection, `SELECT RELEASE_LOCK(${LOCK})`).catch(() => {
          connection?.destroy()
          connection = undefined
        })
    }
  } finally {
    connection?.release()
  }
}
