// The row's values are the public types' (resharder.ts).
import type {
  ReshardCommand as RunCommand,
  ReshardMovePhase as RunMovePhase,
  ReshardState as RunState,
} from '../../resharder.js'
import type { SlotMapStoreInternals } from '../../slotMapStore.js'

export type { RunCommand, RunMovePhase, RunState }

/** One move of a run as the row keeps it: spans as `[start, end)` pairs, to keep the row small. */
export interface RunMove {
  from: string
  to: string
  spans: Array<[number, number]>
  slots: number
  phase: RunMovePhase
  rowsCopied: number
  lagEntries: number
  /** `Date.now()` of the process that cut the move over: the grace period runs from it. */
  movedAt?: number
  rowsPurged?: number
}

/** A run as its row holds it. */
export interface RunRow {
  id: number
  state: RunState
  command: RunCommand | null
  owner: string | null
  placement: Array<{ id: string; weight?: number }>
  graceMs: number
  moves: RunMove[]
  error: string | null
  createdAt: string
  updatedAt: string
  /** Milliseconds since the owner's last heartbeat, by the store server's clock; null if none. */
  heartbeatAgeMs: number | null
}

/** Terminal states: the run no longer blocks a new one. */
export const FINISHED: readonly RunState[] = ['done', 'aborted']

/**
 * The runs' table beside the slot map (`<table>_reshard` on the store's server): one row per run,
 * `active = 1` while it is not over, so a UNIQUE key lets one run at a time exist; `owner` and
 * `heartbeat_at` say which process runs it and whether it is alive; `command` carries a pause,
 * resume or abort from another process.
 */
export class RunTable {
  readonly #query: SlotMapStoreInternals['query']
  readonly name: string
  #ready: Promise<void> | undefined

  constructor(internals: SlotMapStoreInternals) {
    this.#query = internals.query
    this.name = `${internals.movesTable.slice(0, -'_moves'.length)}_reshard`
  }

  async #ensure(): Promise<void> {
    this.#ready ??= (async () => {
      await this.#query(
        `CREATE TABLE IF NOT EXISTS \`${this.name}\` (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, active TINYINT UNSIGNED NULL, state VARCHAR(16) NOT NULL, command VARCHAR(16) NULL, owner VARCHAR(64) NULL, placement TEXT NOT NULL, grace_ms BIGINT UNSIGNED NOT NULL, moves MEDIUMTEXT NOT NULL, error TEXT NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), heartbeat_at TIMESTAMP(6) NULL, UNIQUE KEY active (active))`,
        [],
      )
    })().catch((error: unknown) => {
      this.#ready = undefined
      throw error
    })
    return this.#ready
  }

  /** Inserts a run owned by `owner`; resolves with its id, or undefined if another run is active. */
  async create(
    owner: string,
    placement: RunRow['placement'],
    graceMs: number,
    moves: RunMove[],
  ): Promise<number | undefined> {
    await this.#ensure()
    const result = (await this.#query(
      `INSERT IGNORE INTO \`${this.name}\` (active, state, owner, placement, grace_ms, moves, heartbeat_at) VALUES (1, 'running', ?, ?, ?, ?, NOW(6))`,
      [owner, JSON.stringify(placement), graceMs, JSON.stringify(moves)],
    )) as { affectedRows: number; insertId: number }
    return result.affectedRows === 1 ? Number(result.insertId) : undefined
  }

  /** The run in progress, else the latest one (or undefined if there was never one). */
  async latest(): Promise<RunRow | undefined> {
    await this.#ensure()
    const rows = (await this.#query(
      `SELECT id, state, command, owner, placement, grace_ms, moves, error, CAST(created_at AS CHAR) AS created_at, CAST(updated_at AS CHAR) AS updated_at, TIMESTAMPDIFF(MICROSECOND, heartbeat_at, NOW(6)) AS heartbeat_age FROM \`${this.name}\` ORDER BY active IS NULL, id DESC LIMIT 1`,
      [],
    )) as Array<Record<string, unknown>>
    const row = rows[0]
    if (row === undefined) return undefined
    return {
      id: Number(row.id),
      state: row.state as RunState,
      command: (row.command as RunCommand | null) ?? null,
      owner: (row.owner as string | null) ?? null,
      placement: JSON.parse(row.placement as string) as RunRow['placement'],
      graceMs: Number(row.grace_ms),
      moves: JSON.parse(row.moves as string) as RunMove[],
      error: (row.error as string | null) ?? null,
      createdAt: String(row.created_at),
      updatedAt: String(row.updated_at),
      heartbeatAgeMs:
        row.heartbeat_age === null || row.heartbeat_age === undefined
          ? null
          : Number(row.heartbeat_age) / 1000,
    }
  }

  /**
   * Makes `owner` the run's owner if it has none, or its owner's heartbeat is older than
   * `staleMs` (that process died): true if it is now ours.
   */
  async takeOver(id: number, owner: string, staleMs: number): Promise<boolean> {
    await this.#ensure()
    const result = (await this.#query(
      `UPDATE \`${this.name}\` SET owner = ?, command = NULL, heartbeat_at = NOW(6) WHERE id = ? AND active = 1 AND (owner IS NULL OR owner = ? OR heartbeat_at IS NULL OR heartbeat_at < NOW(6) - INTERVAL ? MICROSECOND)`,
      [owner, id, owner, Math.round(staleMs * 1000)],
    )) as { affectedRows: number }
    return result.affectedRows === 1
  }

  /** Writes the run's state and moves; false if `owner` no longer owns it. */
  async save(
    id: number,
    owner: string,
    state: RunState,
    moves: readonly RunMove[],
    error: string | null,
  ): Promise<boolean> {
    const result = (await this.#query(
      `UPDATE \`${this.name}\` SET state = ?, moves = ?, error = ?, active = IF(? IN ('done', 'aborted'), NULL, 1), heartbeat_at = NOW(6) WHERE id = ? AND owner = ?`,
      [state, JSON.stringify(moves), error, state, id, owner],
    )) as { affectedRows: number }
    return result.affectedRows === 1
  }

  /** Renews the owner's heartbeat and reads a command left for it: undefined if it lost the run. */
  async beat(id: number, owner: string): Promise<{ command: RunCommand | null } | undefined> {
    const result = (await this.#query(
      `UPDATE \`${this.name}\` SET heartbeat_at = NOW(6) WHERE id = ? AND owner = ?`,
      [id, owner],
    )) as { affectedRows: number }
    if (result.affectedRows !== 1) return undefined
    const rows = (await this.#query(`SELECT command FROM \`${this.name}\` WHERE id = ?`, [
      id,
    ])) as Array<{ command: RunCommand | null }>
    return { command: rows[0]?.command ?? null }
  }

  /** Clears a command once acted on (only that command: a newer one stays). */
  async clearCommand(id: number, command: RunCommand): Promise<void> {
    await this.#query(`UPDATE \`${this.name}\` SET command = NULL WHERE id = ? AND command = ?`, [
      id,
      command,
    ])
  }

  /** Leaves a command for the process running the run. */
  async command(id: number, command: RunCommand): Promise<void> {
    await this.#ensure()
    await this.#query(`UPDATE \`${this.name}\` SET command = ? WHERE id = ? AND active = 1`, [
      command,
      id,
    ])
  }

  /** Sets the state of a run nobody runs (a pause of an orphaned run). */
  async setState(id: number, from: readonly RunState[], state: RunState): Promise<boolean> {
    await this.#ensure()
    const result = (await this.#query(
      `UPDATE \`${this.name}\` SET state = ?, command = NULL WHERE id = ? AND active = 1 AND state IN (?)`,
      [state, id, from],
    )) as { affectedRows: number }
    return result.affectedRows === 1
  }

  /** Gives the run up (its state stays): another process may take it over at once. */
  async release(id: number, owner: string): Promise<void> {
    await this.#query(
      `UPDATE \`${this.name}\` SET owner = NULL, heartbeat_at = NULL WHERE id = ? AND owner = ?`,
      [id, owner],
    )
  }
}
