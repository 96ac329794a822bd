import { createHash } from 'node:crypto'
import type { PoolConnection } from 'mysql2/promise'
import { InvalidArgumentError } from '../../errors.js'
import type { MovedTable } from '../../slotMover.js'
import { fenceTableDdl } from '../fence.js'
import type { MoverContext } from './context.js'
import { holds, type MoveSet, slotList } from './slotSet.js'

/** A primary key scan of one table: its quoted columns. */
export interface TableShape {
  name: string
  quoted: string
  key: string
  primaryKey: string[]
}

/** A column or table name, quoted. */
export function quote(name: string): string {
  return `\`${name.replaceAll('`', '``')}\``
}

/** The name of a change log trigger: readable, and unique per table (a long name is cut and hashed). */
export function triggerName(table: string, event: string): string {
  const hash = createHash('md5').update(table).digest('hex').slice(0, 8)
  return `ballast_cl_${table.slice(0, 32)}_${hash}_${event.slice(0, 3).toLowerCase()}`
}

/** The shapes of every moved table, as the connection's database has them. */
export async function shapes(
  context: MoverContext,
  connection: PoolConnection,
): Promise<Map<string, TableShape>> {
  const out = new Map<string, TableShape>()
  for (const table of context.tables) out.set(table.table, await shape(context, connection, table))
  return out
}

/** A moved table's primary key columns, read from the connection's database. */
export async function shape(
  context: MoverContext,
  connection: PoolConnection,
  table: MovedTable,
): Promise<TableShape> {
  const rows = (await context.connections.query(
    connection,
    "SELECT COLUMN_NAME AS c FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
    [table.table],
  )) as Array<{ c: string }>
  if (rows.length === 0)
    throw new InvalidArgumentError(
      `invalid option "tables": table "${table.table}" has no primary key (or does not exist)`,
    )
  return {
    name: table.table,
    quoted: `\`${table.table}\``,
    key: table.key,
    primaryKey: rows.map((r) => r.c),
  }
}

/** Scans a table in primary-key order, `chunkRows` at a time, handing each chunk to `each`. */
export async function scan(
  context: MoverContext,
  connection: PoolConnection,
  shape: TableShape,
  columns: string,
  each: (rows: Array<Record<string, unknown>>) => Promise<void>,
  after?: unknown[],
): Promise<void> {
  const pk = shape.primaryKey.map(quote)
  const order = pk.join(', ')
  let last: unknown[] | undefined = after
  for (;;) {
    const where =
      last === undefined
        ? ''
        : pk.length === 1
          ? `WHERE ${pk[0]} > ?`
          : `WHERE (${order}) > (${pk.map(() => '?').join(', ')})`
    const rows = (await context.connections.query(
      connection,
      `SELECT ${columns} FROM ${shape.quoted} ${where} ORDER BY ${order} LIMIT ${context.chunkRows}`,
      last ?? [],
    )) as Array<Record<string, unknown>>
    if (rows.length === 0) return
    await each(rows)
    const tail = rows[rows.length - 1]!
    last = shape.primaryKey.map((c) => tail[c])
    if (rows.length < context.chunkRows) return
  }
}

/** Writes rows to the target, replacing a row with the same primary key. */
export async function writeRows(
  context: MoverContext,
  target: PoolConnection,
  shape: TableShape,
  rows: Array<Record<string, unknown>>,
): Promise<void> {
  const columns = Object.keys(rows[0]!)
  await context.connections.query(
    target,
    `REPLACE INTO ${shape.quoted} (${columns.map(quote).join(', ')}) VALUES ?`,
    [rows.map((row) => columns.map((c) => row[c]))],
  )
}

/** Deletes the set's rows of a table, `chunkRows` at a time; returns how many. */
export async function deleteSet(
  context: MoverContext,
  connection: PoolConnection,
  shape: TableShape,
  set: MoveSet,
): Promise<number> {
  const pk = shape.primaryKey.map(quote)
  const columns = [...new Set([...pk, quote(shape.key)])].join(', ')
  const doomed: unknown[][] = []
  await scan(context, connection, shape, columns, async (rows) => {
    for (const row of rows)
      if (holds(set, row[shape.key])) doomed.push(shape.primaryKey.map((c) => row[c]))
  })
  for (let i = 0; i < doomed.length; i += context.chunkRows) {
    const chunk = doomed.slice(i, i + context.chunkRows)
    await context.connections.query(
      connection,
      `DELETE FROM ${shape.quoted} WHERE (${pk.join(', ')}) IN (?)`,
      [chunk],
    )
  }
  return doomed.length
}

/** Deletes the set's rows of every moved table on `shard`; returns how many. */
export async function deleteSetOn(
  context: MoverContext,
  shard: string,
  set: MoveSet,
): Promise<number> {
  let deleted = 0
  await context.connections.on(shard, async (connection) => {
    for (const table of context.tables)
      deleted += await deleteSet(context, connection, await shape(context, connection, table), set)
  })
  return deleted
}

/** Writes the fence rows of the set's slots on `shard` (creating the fence table). */
export async function writeFence(
  context: MoverContext,
  shard: string,
  set: MoveSet,
  state: string,
  to: string,
): Promise<void> {
  const { connections, fenceTable, chunkRows } = context
  const slots = slotList(set)
  await connections.on(shard, async (connection) => {
    await connections.query(connection, fenceTableDdl(fenceTable))
    for (let i = 0; i < slots.length; i += chunkRows)
      await connections.query(
        connection,
        `INSERT INTO \`${fenceTable}\` (slot, state, moved_to) VALUES ? ON DUPLICATE KEY UPDATE state = VALUES(state), moved_to = VALUES(moved_to)`,
        [slots.slice(i, i + chunkRows).map((slot) => [slot, state, to])],
      )
  })
}
