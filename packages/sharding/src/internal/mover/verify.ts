import { createHash } from 'node:crypto'
import type { PoolConnection } from 'mysql2/promise'
import { SlotCopyMismatchError } from '../../errors.js'
import { applyLog, lastLogged, syncRows } from './changeLog.js'
import type { MoverContext } from './context.js'
import { holds, type MoveSet } from './slotSet.js'
import { quote, shapes, type TableShape } from './sql.js'

// The verification of a move's copy, in two parts so the write pause does not grow with the
// table (see docs/resharding.md, "Verification"):
// - before the fence, `verifyCopy` compares the source and the target one primary-key chunk at a
//   time (count and checksum of the moving rows on each side), re-copies the rows of a chunk
//   that differs and checks them again; changes made meanwhile are in the change log;
// - the cut-over then applies the log (before the fence, then its tail under it) and records
//   every row it applied in a `TouchedRows`; under the fence `verifyTouched` compares only those
//   rows. A row the log never touched since its chunk was verified is as it was verified: only
//   the mover writes the target's copy.

/** A primary key as a string that compares equal across spellings (`1` and `'1'`). */
export const keyOf = (pk: readonly unknown[]): string => JSON.stringify(pk.map(String))

/** The rows the change log made the mover write (or delete) on the target, per table, since the verification. */
export class TouchedRows {
  readonly #tables = new Map<TableShape, Map<string, unknown[]>>()

  /** Records rows of `shape` by primary key (a row recorded twice counts once). */
  add(shape: TableShape, pks: readonly unknown[][]): void {
    let rows = this.#tables.get(shape)
    if (rows === undefined) {
      rows = new Map()
      this.#tables.set(shape, rows)
    }
    for (const pk of pks) rows.set(keyOf(pk), pk)
  }

  /** Rows recorded, all tables. */
  get size(): number {
    let size = 0
    for (const rows of this.#tables.values()) size += rows.size
    return size
  }

  /** Takes every recorded row out, by table. */
  take(): Array<{ shape: TableShape; pks: unknown[][] }> {
    const out = [...this.#tables].map(([shape, rows]) => ({ shape, pks: [...rows.values()] }))
    this.#tables.clear()
    return out
  }
}

/** What {@link verifyCopy} did. */
export interface CopyVerification {
  /** Moving rows compared on each side. */
  rowsVerified: number
  /** Rows that differed and were copied again (or deleted from the target). */
  rowsRecopied: number
}

/**
 * Compares the moving rows of a table on both sides, one primary-key chunk of the source at a
 * time (with the target's rows of the same key range): count and checksum; a chunk that differs
 * has its differing rows copied again from the source and checked again. Runs before the fence,
 * while writers go on: a row still different after that must have a change logged and not yet
 * applied (the cut-over applies it and checks it again), else the copies really differ and it
 * throws {@link SlotCopyMismatchError}. `pace` is awaited after each chunk (the throttle).
 */
export async function verifyCopy(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  set: MoveSet,
  pace: () => Promise<void>,
): Promise<CopyVerification> {
  const done: CopyVerification = { rowsVerified: 0, rowsRecopied: 0 }
  await chunks(context, source, target, shape, set, async (sourceRows, targetRows) => {
    done.rowsVerified += sourceRows.size
    const differ = differences(sourceRows, targetRows)
    if (differ.length > 0) {
      done.rowsRecopied += differ.length
      await syncRows(context, source, target, shape, differ, set)
      const still = differences(
        await moving(context, source, shape, differ, set),
        await moving(context, target, shape, differ, set),
      )
      if (still.length > 0) await pendingOrThrow(context, source, shape, still)
    }
    await pace()
  })
  return done
}

/**
 * Compares the moving rows of a table on both sides in full (count and checksum, chunk by
 * chunk), for a cut-over that copied the whole span under the fence; throws
 * {@link SlotCopyMismatchError} if they differ. Returns the rows compared on each side.
 */
export async function verifyTable(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  set: MoveSet,
): Promise<number> {
  let rows = 0
  await chunks(context, source, target, shape, set, async (sourceRows, targetRows) => {
    rows += sourceRows.size
    const differ = differences(sourceRows, targetRows)
    if (differ.length > 0) throw mismatch(shape, differ, sourceRows, targetRows)
  })
  return rows
}

/**
 * Compares the rows `touched` recorded on both sides, by primary key, `chunkRows` at a time.
 * Under the fence (`recopy: false`) any difference throws {@link SlotCopyMismatchError} (the
 * cut-over rolls back). Before it (`recopy: true`) differing rows are copied again first, and
 * only those still different with no change logged throw. Empties `touched`; returns the rows
 * compared.
 */
export async function verifyTouched(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  touched: TouchedRows,
  set: MoveSet,
  { recopy }: { recopy: boolean },
): Promise<number> {
  let compared = 0
  for (const { shape, pks } of touched.take())
    for (let i = 0; i < pks.length; i += context.chunkRows) {
      const chunk = pks.slice(i, i + context.chunkRows)
      const sourceRows = await moving(context, source, shape, chunk, set)
      const targetRows = await moving(context, target, shape, chunk, set)
      compared += chunk.length
      let differ = differences(sourceRows, targetRows)
      if (differ.length === 0) continue
      if (!recopy) throw mismatch(shape, differ, sourceRows, targetRows)
      await syncRows(context, source, target, shape, differ, set)
      differ = differences(
        await moving(context, source, shape, differ, set),
        await moving(context, target, shape, differ, set),
      )
      if (differ.length > 0) await pendingOrThrow(context, source, shape, differ)
    }
  return compared
}

/** The moving rows of one side, by primary key: each row's digest and its key. */
type Side = Map<string, { digest: string; pk: unknown[] }>

/** Scans the source in primary-key chunks and hands each with the target's rows of its key range to `each`. */
async function chunks(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  set: MoveSet,
  each: (sourceRows: Side, targetRows: Side) => Promise<void>,
): Promise<void> {
  const { connections, chunkRows } = context
  const pk = shape.primaryKey.map(quote)
  const tuple = pk.length === 1 ? pk[0]! : `(${pk.join(', ')})`
  const marks = pk.length === 1 ? '?' : `(${pk.map(() => '?').join(', ')})`
  const order = pk.join(', ')
  let after: unknown[] | undefined
  for (;;) {
    const rows = (await connections.query(
      source,
      `SELECT * FROM ${shape.quoted} ${after === undefined ? '' : `WHERE ${tuple} > ${marks}`} ORDER BY ${order} LIMIT ${chunkRows}`,
      after ?? [],
    )) as Array<Record<string, unknown>>
    const last =
      rows.length === chunkRows ? shape.primaryKey.map((c) => rows.at(-1)![c]) : undefined
    // The target's rows of the same key range; the last chunk's range is open, so the target's
    // rows past the source's last key are compared too.
    const bounds = [
      ...(after === undefined ? [] : [`${tuple} > ${marks}`]),
      ...(last === undefined ? [] : [`${tuple} <= ${marks}`]),
    ]
    const theirs = (await connections.query(
      target,
      `SELECT * FROM ${shape.quoted} ${bounds.length === 0 ? '' : `WHERE ${bounds.join(' AND ')}`}`,
      [...(after ?? []), ...(last ?? [])],
    )) as Array<Record<string, unknown>>
    await each(side(shape, rows, set), side(shape, theirs, set))
    if (last === undefined) return
    after = last
  }
}

/** The moving rows of `pks` on one side, read by primary key. */
async function moving(
  context: MoverContext,
  connection: PoolConnection,
  shape: TableShape,
  pks: readonly unknown[][],
  set: MoveSet,
): Promise<Side> {
  const columns = `(${shape.primaryKey.map(quote).join(', ')})`
  const rows = (await context.connections.query(
    connection,
    `SELECT * FROM ${shape.quoted} WHERE ${columns} IN (?)`,
    [pks],
  )) as Array<Record<string, unknown>>
  return side(shape, rows, set)
}

function side(shape: TableShape, rows: Array<Record<string, unknown>>, set: MoveSet): Side {
  const out: Side = new Map()
  for (const row of rows) {
    if (!holds(set, row[shape.key])) continue
    const pk = shape.primaryKey.map((c) => row[c])
    out.set(keyOf(pk), { digest: digest(row), pk })
  }
  return out
}

/** A row's MD5 over its columns as the server prints them (names sorted, so column order does not matter). */
function digest(row: Record<string, unknown>): string {
  return createHash('md5')
    .update(
      JSON.stringify(
        Object.keys(row)
          .sort()
          .map((c) => [c, row[c]]),
      ),
    )
    .digest('hex')
}

/** The count and checksum (the XOR of the rows' digests, so order does not matter) of one side. */
function checksum(rows: Side): { count: number; checksum: string } {
  const acc = Buffer.alloc(16)
  for (const { digest } of rows.values()) {
    const bytes = Buffer.from(digest, 'hex')
    for (let i = 0; i < 16; i++) acc[i]! ^= bytes[i]!
  }
  return { count: rows.size, checksum: acc.toString('hex') }
}

/** The primary keys of rows that differ: on one side only, or with other values. Cheap when the checksums agree. */
function differences(a: Side, b: Side): unknown[][] {
  const left = checksum(a)
  const right = checksum(b)
  if (left.count === right.count && left.checksum === right.checksum) return []
  const out: unknown[][] = []
  for (const [key, row] of a) if (b.get(key)?.digest !== row.digest) out.push(row.pk)
  for (const [key, row] of b) if (!a.has(key)) out.push(row.pk)
  return out
}

/**
 * Rows that still differ after a re-copy are fine only if a change of theirs is in the log (a
 * writer changed them meanwhile: the cut-over applies it and checks them again).
 */
async function pendingOrThrow(
  context: MoverContext,
  source: PoolConnection,
  shape: TableShape,
  pks: unknown[][],
): Promise<void> {
  const logged = (await context.connections.query(
    source,
    `SELECT pk FROM \`${context.logTable}\` WHERE tbl = ?`,
    [shape.name],
  )) as Array<{ pk: string }>
  const pending = new Set(logged.map((entry) => keyOf(JSON.parse(entry.pk) as unknown[])))
  const lost = pks.filter((pk) => !pending.has(keyOf(pk)))
  if (lost.length > 0)
    throw new SlotCopyMismatchError(
      shape.name,
      `${lost.length} moving row(s) of table "${shape.name}" still differ on the target after being copied again (first key ${keyOf(lost[0]!)}); the cut-over did not fence`,
    )
}

function mismatch(shape: TableShape, differ: unknown[][], a: Side, b: Side): SlotCopyMismatchError {
  const left = checksum(a)
  const right = checksum(b)
  return new SlotCopyMismatchError(
    shape.name,
    `the moving rows of table "${shape.name}" differ: ${left.count} rows (checksum ${left.checksum}) on the source, ${right.count} (${right.checksum}) on the target, ${differ.length} row(s) not the same (first key ${keyOf(differ[0]!)}); the cut-over was rolled back`,
  )
}

/** What {@link verifyBeforeFence} found, for the fenced part of the cut-over. */
export interface VerifiedBeforeFence {
  /** Rows the log made the mover write since the rows were compared: the fence compares these again (and the tail's). */
  touched: TouchedRows
  /** Moving rows compared on each side (chunks, then the log's rows). */
  rowsVerified: number
  /** Rows found different and copied again. */
  rowsRecopied: number
}

/** Passes of the log before the fence, after the chunks were compared, at most. */
const PASSES_BEFORE_FENCE = 5

/**
 * The cut-over's verification before the fence, after a bulk copy: compares the copy chunk by
 * chunk ({@link verifyCopy}), paced by the throttle; then applies what the log gathered
 * meanwhile and compares those rows, pass after pass (up to 5) until a pass reads less than one
 * chunk of the log or no less than the pass before, so the fence has only the log's tail to
 * apply and compare. Returns the rows
 * the fence must compare again with the tail's (none yet: each pass compared its own).
 */
export async function verifyBeforeFence(
  context: MoverContext,
  from: string,
  to: string,
  set: MoveSet,
): Promise<VerifiedBeforeFence> {
  const { connections } = context
  const touched = new TouchedRows()
  let rowsVerified = 0
  let rowsRecopied = 0
  await connections.on(from, (source) =>
    connections.on(to, async (target) => {
      const tableShapes = await shapes(context, source)
      const pace = await context.throttle.start(source)
      for (const shape of tableShapes.values()) {
        const done = await verifyCopy(context, source, target, shape, set, () => pace())
        rowsVerified += done.rowsVerified
        rowsRecopied += done.rowsRecopied
      }
      // Not throttled, as the tail under the fence: the passes must catch up with the writers.
      let before = Number.POSITIVE_INFINITY
      for (let pass = 0; pass < PASSES_BEFORE_FENCE; pass++) {
        const { read } = await applyLog(context, source, target, tableShapes, set, {
          upTo: await lastLogged(context, source),
          throttle: false,
          touched,
        })
        rowsVerified += await verifyTouched(context, source, target, touched, set, {
          recopy: true,
        })
        if (read < context.chunkRows || read >= before) break
        before = read
      }
    }),
  )
  return { touched, rowsVerified, rowsRecopied }
}
