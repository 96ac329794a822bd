import type { MoverContext } from './context.js'

/**
 * A move's copy progress, kept in the store's `<table>_moves` (the change log itself is the
 * catch-up's progress: entries are deleted once applied).
 */
export interface MoveProgress {
  /** The source and the target, for an abort that must finish after the map was given back. */
  from?: string
  to?: string
  /** Per table, the primary key the copy reached, or `true` once the table is copied. */
  copied: Record<string, unknown[] | true>
  rowsCopied: number
  copyDone: boolean
}

async function ensureMovesTable(context: MoverContext): Promise<void> {
  await context.internals.query(
    `CREATE TABLE IF NOT EXISTS \`${context.internals.movesTable}\` (span_start INT UNSIGNED NOT NULL, span_end INT UNSIGNED NOT NULL, progress TEXT NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), PRIMARY KEY (span_start, span_end))`,
    [],
  )
}

export async function saveProgress(
  context: MoverContext,
  start: number,
  end: number,
  progress: MoveProgress,
): Promise<void> {
  await ensureMovesTable(context)
  await context.internals.query(
    `INSERT INTO \`${context.internals.movesTable}\` (span_start, span_end, progress) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE progress = VALUES(progress)`,
    [start, end, JSON.stringify(progress)],
  )
}

export async function loadProgress(
  context: MoverContext,
  start: number,
  end: number,
): Promise<MoveProgress | undefined> {
  await ensureMovesTable(context)
  const rows = (await context.internals.query(
    `SELECT progress FROM \`${context.internals.movesTable}\` WHERE span_start = ? AND span_end = ?`,
    [start, end],
  )) as Array<{ progress: string }>
  return rows[0] === undefined ? undefined : (JSON.parse(rows[0].progress) as MoveProgress)
}

export async function deleteProgress(
  context: MoverContext,
  start: number,
  end: number,
): Promise<void> {
  await ensureMovesTable(context)
  await context.internals.query(
    `DELETE FROM \`${context.internals.movesTable}\` WHERE span_start = ? AND span_end = ?`,
    [start, end],
  )
}
