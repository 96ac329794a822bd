import type { SlotSpan } from '../../slotMover.js'
import type { MoverContext } from './context.js'

/**
 * A move's progress, one row per source in the store's `<table>_moves` (one move off a source
 * at a time): its target and slots, for an abort that must finish after the map was given back
 * and for the status, and how far the copy got (the change log itself is the catch-up's
 * progress: entries are deleted once applied).
 */
export interface MoveProgress {
  from: string
  to: string
  /** The move's spans, normalised. */
  spans: SlotSpan[]
  /** Per table, the primary key the copy reached, or `true` once the table is copied. */
  copied: Record<string, unknown[] | true>
  rowsCopied: number
  copyDone: boolean
}

async function ensureMovesTable(context: MoverContext): Promise<void> {
  await context.internals.query(
    `CREATE TABLE IF NOT EXISTS \`${context.internals.movesTable}\` (source VARCHAR(64) NOT NULL PRIMARY KEY, progress MEDIUMTEXT NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))`,
    [],
  )
}

/** Keeps a move's progress (replacing the source's previous row). */
export async function saveProgress(context: MoverContext, progress: MoveProgress): Promise<void> {
  await ensureMovesTable(context)
  await context.internals.query(
    `INSERT INTO \`${context.internals.movesTable}\` (source, progress) VALUES (?, ?) ON DUPLICATE KEY UPDATE progress = VALUES(progress)`,
    [progress.from, JSON.stringify(progress)],
  )
}

/** The progress of the move off `from`, if one was kept. */
export async function loadProgress(
  context: MoverContext,
  from: string,
): Promise<MoveProgress | undefined> {
  await ensureMovesTable(context)
  const rows = (await context.internals.query(
    `SELECT progress FROM \`${context.internals.movesTable}\` WHERE source = ?`,
    [from],
  )) as Array<{ progress: string }>
  return rows[0] === undefined ? undefined : (JSON.parse(rows[0].progress) as MoveProgress)
}

/** The progress of every move kept. */
export async function listProgress(context: MoverContext): Promise<MoveProgress[]> {
  await ensureMovesTable(context)
  const rows = (await context.internals.query(
    `SELECT progress FROM \`${context.internals.movesTable}\` ORDER BY source`,
    [],
  )) as Array<{ progress: string }>
  return rows.map((row) => JSON.parse(row.progress) as MoveProgress)
}

/** Forgets the move off `from`. */
export async function deleteProgress(context: MoverContext, from: string): Promise<void> {
  await ensureMovesTable(context)
  await context.internals.query(
    `DELETE FROM \`${context.internals.movesTable}\` WHERE source = ?`,
    [from],
  )
}
