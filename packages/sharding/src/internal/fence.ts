import { SlotMovedError } from '../errors.js'

/**
 * The fence rows of one source shard (see `docs/resharding.md`): one row per moving slot,
 * `copying` while the slot's rows are being moved, `moved` once the cut-over committed. Kept
 * after the move, so a late writer is still refused.
 */
export function fenceTableDdl(table: string): string {
  return `CREATE TABLE IF NOT EXISTS \`${table}\` (slot INT UNSIGNED NOT NULL PRIMARY KEY, state VARCHAR(16) NOT NULL, moved_to VARCHAR(64) NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))`
}

/** MariaDB's `ER_NO_SUCH_TABLE`: the shard was never the source of a move. */
const NO_SUCH_TABLE = 1146

/**
 * The writer's side of the fence, run first in the writer's transaction on the slot's owner:
 * a shared lock on the slot's fence row (so the mover's cut-over, which takes it `FOR UPDATE`,
 * waits for this transaction, and this one waits for the cut-over), and a refusal if the slot
 * has moved. No row (or no table) means the slot is not moving off this shard.
 * @throws SlotMovedError if the slot's row says `moved`.
 */
export async function checkFence(
  query: (sql: string, params: readonly unknown[]) => Promise<unknown>,
  table: string,
  slot: number,
  shard: string,
): Promise<void> {
  let rows: Array<{ state: string }>
  try {
    rows = (await query(`SELECT state FROM \`${table}\` WHERE slot = ? LOCK IN SHARE MODE`, [
      slot,
    ])) as Array<{ state: string }>
  } catch (error) {
    if ((error as { errno?: unknown })?.errno === NO_SUCH_TABLE) return
    throw error
  }
  if (rows[0]?.state === 'moved') throw new SlotMovedError(slot, shard)
}
