import type { PoolConnection } from 'mysql2/promise'
import type { SlotMap } from '../../slotMap.js'
import type { CatchUpResult, SlotSet, StepOptions } from '../../slotMover.js'
import {
  emitPhase,
  fenceInMs,
  type MoverContext,
  moveFields,
  moving,
  sleep,
  updateMap,
} from './context.js'
import type { MoveLock } from './lock.js'
import { holds, type MoveSet } from './slotSet.js'
import { quote, shapes, type TableShape, triggerName, writeRows } from './sql.js'
import { rideOut } from './stall.js'
import type { TouchedRows } from './verify.js'

/** Creates the change log and its triggers on the source (idempotent) and empties the log. */
export async function startChangeLog(context: MoverContext, from: string): Promise<void> {
  const { connections, logTable } = context
  await connections.on(from, async (connection) => {
    await connections.query(
      connection,
      `CREATE TABLE IF NOT EXISTS \`${logTable}\` (seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, tbl VARCHAR(64) NOT NULL, pk TEXT NOT NULL, shard_key VARCHAR(255) NULL)`,
    )
    for (const shape of (await shapes(context, connection)).values()) {
      const entry = (row: 'NEW' | 'OLD') =>
        `INSERT INTO \`${logTable}\` (tbl, pk, shard_key) VALUES ('${shape.name}', JSON_ARRAY(${shape.primaryKey.map((c) => `CAST(${row}.${quote(c)} AS CHAR)`).join(', ')}), CAST(${row}.${quote(shape.key)} AS CHAR))`
      // An update logs the old row too only when its primary key or shard key changed, compared
      // as bytes (a change of case or trailing space under a collation that ignores it moves the
      // key to another slot): the old row must then be deleted from the target. Each logged row
      // is a write in the writer's transaction; most updates change neither.
      const moved = [...shape.primaryKey, shape.key]
        .map((c) => `CAST(OLD.${quote(c)} AS BINARY) <=> CAST(NEW.${quote(c)} AS BINARY)`)
        .join(' AND ')
      for (const [event, body] of [
        ['INSERT', entry('NEW')],
        ['UPDATE', `BEGIN ${entry('NEW')}; IF NOT (${moved}) THEN ${entry('OLD')}; END IF; END`],
        ['DELETE', entry('OLD')],
      ] as const) {
        await tableDdl(
          context,
          connection,
          `CREATE TRIGGER IF NOT EXISTS ${quote(triggerName(shape.name, event))} AFTER ${event} ON ${shape.quoted} FOR EACH ROW ${body}`,
        )
      }
    }
    // Changes before this point are in the rows the copy reads; older entries are of no use.
    await connections.query(connection, `DELETE FROM \`${logTable}\``)
  })
}

/** Drops the triggers and the change log of the source. */
export async function stopChangeLog(context: MoverContext, from: string): Promise<void> {
  const { connections, logTable } = context
  await connections.on(from, async (connection) => {
    for (const table of context.tables)
      for (const event of ['INSERT', 'UPDATE', 'DELETE'])
        await tableDdl(
          context,
          connection,
          `DROP TRIGGER IF EXISTS ${quote(triggerName(table.table, event))}`,
        )
    await tableDdl(context, connection, `DROP TABLE IF EXISTS \`${logTable}\``)
  })
}

/** MariaDB's answer to a statement that did not get its lock in time (`lock_wait_timeout`). */
const ER_LOCK_WAIT_TIMEOUT = 1205
/** How long {@link tableDdl} tries without waiting for the table's lock before it waits. */
const DDL_NOWAIT_FOR_MS = 10_000

/**
 * Runs DDL on a moved table or the change log (the triggers', at `begin` and after the cut-over)
 * without waiting for its metadata lock: `lock_wait_timeout = 0`, tried again every few
 * milliseconds while a transaction holds the table. DDL that waits for that lock makes every
 * transaction that read the table and then writes it a deadlock victim (`ER_LOCK_DEADLOCK`:
 * MariaDB's metadata-lock deadlock detector gives way to the DDL); DDL that never waits leaves
 * the writers alone. After {@link DDL_NOWAIT_FOR_MS} of refusals (a table never free for an
 * instant) it waits as the server would, so the move goes on.
 */
export async function tableDdl(
  context: MoverContext,
  connection: PoolConnection,
  sql: string,
): Promise<void> {
  const until = performance.now() + DDL_NOWAIT_FOR_MS
  while (performance.now() < until) {
    try {
      await context.connections.query(connection, `SET STATEMENT lock_wait_timeout = 0 FOR ${sql}`)
      return
    } catch (error) {
      if ((error as { errno?: unknown } | null)?.errno !== ER_LOCK_WAIT_TIMEOUT) throw error
    }
    // Transactions on the table are short: a few milliseconds, jittered, until none holds it.
    await sleep(2 + Math.random() * 8)
  }
  await context.connections.query(connection, sql)
}

/** The log's last `seq` (0 when empty): a pass applies up to it. */
export async function lastLogged(context: MoverContext, source: PoolConnection): Promise<number> {
  const [{ last }] = (await context.connections.query(
    source,
    `SELECT COALESCE(MAX(seq), 0) AS last FROM \`${context.logTable}\``,
  )) as [{ last: unknown }]
  return Number(last)
}

/** Rows applied and entries read by the catch-up, kept across the attempts of a stalled pass. */
export interface LogCounts {
  applied: number
  read: number
}

/**
 * Reads change log entries in `seq` order (up to `upTo`), writes or deletes on the target each
 * logged row of the span as the source has it now, and deletes the entries it read. Entries
 * of a transaction that commits late (a lower `seq` than entries already read) stay in the log
 * and are read by the next pass: the log is a queue, not a position.
 */
export async function applyLog(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  tableShapes: Map<string, TableShape>,
  set: MoveSet,
  {
    upTo,
    throttle,
    signal,
    touched,
    done,
  }: {
    upTo: number
    throttle: boolean
    signal?: AbortSignal | undefined
    /** Records the rows applied, for the verification ({@link TouchedRows}). */
    touched?: TouchedRows | undefined
    /**
     * Counts each chunk once its entries are deleted, across attempts of a pass a stall
     * interrupted (whose returned counts are lost with it).
     */
    done?: LogCounts | undefined
  },
): Promise<{ applied: number; read: number }> {
  const { connections, logTable } = context
  // A pass must keep up with the writers: only the fixed chunkDelay paces it.
  const pace = throttle ? await context.throttle.start(source, { adaptive: false }) : undefined
  let applied = 0
  let read = 0
  for (;;) {
    const entries = (await connections.query(
      source,
      `SELECT seq, tbl, pk, shard_key FROM \`${logTable}\` WHERE seq <= ? ORDER BY seq LIMIT ${context.chunkRows}`,
      [upTo],
    )) as Array<{ seq: unknown; tbl: string; pk: string; shard_key: unknown }>
    if (entries.length === 0) break
    read += entries.length
    const rows = new Map<string, { shape: TableShape; pk: unknown[] }>()
    for (const entry of entries) {
      const shape = tableShapes.get(entry.tbl)
      if (shape === undefined || !holds(set, entry.shard_key)) continue
      rows.set(`${entry.tbl}\u0000${entry.pk}`, { shape, pk: JSON.parse(entry.pk) as unknown[] })
    }
    const byTable = new Map<TableShape, unknown[][]>()
    for (const { shape, pk } of rows.values()) {
      const pks = byTable.get(shape)
      if (pks === undefined) byTable.set(shape, [pk])
      else pks.push(pk)
    }
    let chunkApplied = 0
    for (const [shape, pks] of byTable) {
      await syncRows(context, source, target, shape, pks, set)
      touched?.add(shape, pks)
      chunkApplied += pks.length
    }
    applied += chunkApplied
    await connections.query(source, `DELETE FROM \`${logTable}\` WHERE seq IN (?)`, [
      entries.map((e) => e.seq),
    ])
    if (done !== undefined) {
      done.applied += chunkApplied
      done.read += entries.length
    }
    // The entries read are applied and gone: a pass stopped here resumes with the next ones.
    signal?.throwIfAborted()
    await pace?.(signal)
  }
  return { applied, read }
}

/**
 * Makes the target's copies of logged rows what the source has now: one read of them on the
 * source, then one delete (rows gone, or whose key left the span) and one replace (the rest)
 * on the target. The delete goes first, so a row found under another spelling of its key
 * than the log's is deleted and written back, never lost.
 */
export async function syncRows(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  pks: unknown[][],
  set: MoveSet,
): Promise<void> {
  const columns = `(${shape.primaryKey.map(quote).join(', ')})`
  const found = (await context.connections.query(
    source,
    `SELECT * FROM ${shape.quoted} WHERE ${columns} IN (?)`,
    [pks],
  )) as Array<Record<string, unknown>>
  const keyOf = (values: unknown[]) => JSON.stringify(values.map(String))
  const seen = new Set<string>()
  const keep: Array<Record<string, unknown>> = []
  const gone: unknown[][] = []
  for (const row of found) {
    const pk = shape.primaryKey.map((c) => row[c])
    seen.add(keyOf(pk))
    if (holds(set, row[shape.key])) keep.push(row)
    else gone.push(pk)
  }
  for (const pk of pks) if (!seen.has(keyOf(pk))) gone.push(pk)
  if (gone.length > 0)
    await context.connections.query(target, `DELETE FROM ${shape.quoted} WHERE ${columns} IN (?)`, [
      gone,
    ])
  if (keep.length > 0) await writeRows(context, target, shape, keep)
}

/** The catch-up step ({@link SlotMover.catchUp}), run under the source's move lock. */
export async function catchUpStep(
  context: MoverContext,
  slotSet: SlotSet,
  { signal }: StepOptions,
  lock: MoveLock,
): Promise<CatchUpResult> {
  const { from, to, set, phases } = await moving(context, slotSet, 'catchUp', { whole: true })
  if (phases.has('copying')) await startChecks(context, set, from, to)
  // A shard that stops answering is waited for: the pass runs again, the entries it had not
  // deleted are applied again (idempotent).
  // Counted across attempts: a pass a stall interrupted has applied (and deleted) entries the
  // attempt after it will not see again.
  const counts: LogCounts = { applied: 0, read: 0 }
  const pass = await rideOut(context, 'catchUp', moveFields(set, from, to), lock, signal, () =>
    catchUpPass(context, set, from, to, signal, counts),
  )
  return {
    rowsApplied: counts.applied,
    entriesRead: counts.read,
    lagEntries: pass.lagEntries,
    fenceInMs: fenceInMs(context, from),
  }
}

/**
 * Marks the set `catching-up` in the map: from this version on, routers check the source's fence
 * row when they write the set, and the cut-over waits `fenceDelay` before it takes the fence.
 */
export async function startChecks(
  context: MoverContext,
  set: MoveSet,
  from: string,
  to: string,
): Promise<SlotMap> {
  const map = await updateMap(context, set, (part) => ({
    ...part,
    moving: { to, phase: 'catching-up' },
  }))
  context.checkedSince.set(from, performance.now())
  emitPhase(context, set, from, to, 'catching-up')
  return map
}

/** One pass of the catch-up: applies what was logged when it began, reports the lag. */
export function catchUpPass(
  context: MoverContext,
  set: MoveSet,
  from: string,
  to: string,
  signal: AbortSignal | undefined,
  counts?: LogCounts,
): Promise<Omit<CatchUpResult, 'fenceInMs'>> {
  const { connections, events } = context
  return connections.on(from, (source) =>
    connections.on(to, async (target) => {
      // What was logged when the pass began: writers keep adding, and the pass must end.
      const upTo = await lastLogged(context, source)
      const done = await applyLog(context, source, target, await shapes(context, source), set, {
        upTo,
        throttle: true,
        signal,
        done: counts,
      })
      const [{ n: left }] = (await connections.query(
        source,
        `SELECT COUNT(*) AS n FROM \`${context.logTable}\``,
      )) as [{ n: unknown }]
      const lagEntries = Number(left)
      if (events.has('log-applied'))
        events.emit('log-applied', {
          ...moveFields(set, from, to),
          entries: done.read,
          rows: done.applied,
          lagEntries,
        })
      return { rowsApplied: done.applied, entriesRead: done.read, lagEntries }
    }),
  )
}
