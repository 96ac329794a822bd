import type { ResultSetHeader } from 'mysql2'
import { argument } from './internal/check.js'
import { addDecimalStrings } from './internal/decimal.js'

/** A row as mysql2 returns it: column name to value. */
export type Row = Record<string, unknown>

/**
 * What one statement resolves to, as mysql2 gives it: the rows of a read (an array of the row
 * type the caller names, an interface or a type) or the `ResultSetHeader` of a write. The
 * type argument of {@link ShardRouter.query} and {@link ShardTransaction.query}, as in mysql2's
 * `pool.query<T>()`: `router.query<OrderRow[]>(…)`, `router.query<ResultSetHeader>(…)`.
 */
export type QueryResult = readonly unknown[] | ResultSetHeader

/** One sort key of an `ORDER BY` merge. */
export interface OrderKey {
  /** The result column (its name or alias in the `SELECT` list). */
  column: string
  /**
   * The direction the SQL's `ORDER BY` uses for this column.
   * @default 'asc'
   */
  direction?: 'asc' | 'desc'
  /**
   * How two values compare; must agree with the server's order for the column (its collation).
   * @default {@link compareValues}: `NULL` first, numbers, bigints and dates by value, strings by code unit
   */
  compare?: (a: unknown, b: unknown) => number
}

/**
 * Merge of rows that every shard returned already sorted by the same `ORDER BY`: a k-way merge
 * keeps the global order. With `limit`, each shard is asked for `LIMIT offset + limit` rows
 * (the router appends it, so the SQL must have no `LIMIT` of its own) and the merge stops as
 * soon as it has `offset + limit` rows.
 */
export interface OrderByMerge {
  /** The sort keys, outermost first, as in the SQL's `ORDER BY`. */
  orderBy: string | OrderKey | ReadonlyArray<string | OrderKey>
  /** Rows to return after `offset`. */
  limit?: number
  /**
   * Rows to skip in the merged order.
   * @default 0
   */
  offset?: number
}

/**
 * How one column of an aggregate merge combines across shards. `count` and `sum` add,
 * `min`/`max` keep the extreme, and `{ avg: { sum, count } }` divides the merged `sum`
 * column by the merged `count` column (never an average of averages).
 */
export type Aggregate = 'count' | 'sum' | 'min' | 'max' | AverageAggregate

/** An average over shards, computed from merged `SUM` and `COUNT` columns of the same row. */
export interface AverageAggregate {
  /** The columns the average is made of. */
  avg: AverageColumns
}

/** The columns an {@link AverageAggregate} divides: `sum / count`, after both are merged. */
export interface AverageColumns {
  /** The `SUM(x)` column (merged by adding). */
  sum: string
  /** The `COUNT(x)` column (merged by adding). */
  count: string
}

/**
 * Merge of aggregate rows (`SELECT COUNT(*) AS n, SUM(total) AS s … [GROUP BY …]`): rows with
 * equal `groupBy` columns combine column by column.
 */
export interface AggregateMerge {
  /** Per output column, how it combines; columns not named here keep the first shard's value. */
  aggregate: Readonly<Record<string, Aggregate>>
  /**
   * The `GROUP BY` columns, whose values identify a group across shards.
   * @default []
   */
  groupBy?: readonly string[]
  /** Sort keys for the merged groups, applied after combining. */
  orderBy?: string | OrderKey | ReadonlyArray<string | OrderKey>
}

/** How {@link ShardRouter.all} combines the rows of every shard. Without one, rows are concatenated in shard order. */
export type MergeSpec = OrderByMerge | AggregateMerge

/**
 * The default comparison of {@link OrderKey}: `NULL`/`undefined` first (as MySQL sorts them
 * ascending), then numbers and bigints by value, dates by time, buffers bytewise, strings by
 * UTF-16 code unit (use a `compare` of your own for case-insensitive collations or for
 * numbers returned as strings).
 */
export function compareValues(a: unknown, b: unknown): number {
  if (a === b) return 0
  if (a === null || a === undefined) return b === null || b === undefined ? 0 : -1
  if (b === null || b === undefined) return 1
  if (
    (typeof a === 'number' || typeof a === 'bigint') &&
    (typeof b === 'number' || typeof b === 'bigint')
  ) {
    return a < b ? -1 : a > b ? 1 : 0
  }
  if (a instanceof Date && b instanceof Date) return a.getTime() - b.getTime()
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.compare(a, b)
  const sa = String(a)
  const sb = String(b)
  return sa < sb ? -1 : sa > sb ? 1 : 0
}

/** Normalises the `orderBy` of a merge into a single comparator of rows. */
export function rowComparator(
  orderBy: string | OrderKey | ReadonlyArray<string | OrderKey>,
): (a: Row, b: Row) => number {
  const list = (Array.isArray(orderBy) ? orderBy : [orderBy]) as ReadonlyArray<string | OrderKey>
  if (list.length === 0) argument.invalid('merge.orderBy', 'at least one column', orderBy)
  const keys = list.map((k, i) => {
    const key = typeof k === 'string' ? { column: k } : k
    const name = Array.isArray(orderBy) ? `merge.orderBy[${i}]` : 'merge.orderBy'
    if (typeof key !== 'object' || key === null)
      argument.invalid(name, 'a column name or { column, direction? }', key)
    argument.string(`${name}${typeof k === 'string' ? '' : '.column'}`, key.column)
    if (key.direction !== undefined)
      argument.oneOf(`${name}.direction`, key.direction, ['asc', 'desc'])
    return {
      column: key.column,
      sign: key.direction === 'desc' ? -1 : 1,
      compare: key.compare ?? compareValues,
    }
  })
  return (a, b) => {
    for (const k of keys) {
      const c = k.compare(a[k.column], b[k.column])
      if (c !== 0) return c * k.sign
    }
    return 0
  }
}

/**
 * Merges sorted row lists into one sorted list with a binary heap over the lists' heads:
 * O(taken × log k). Stops after `take` rows; ties keep shard order (stable).
 */
export function mergeSorted<T>(
  lists: readonly (readonly T[])[],
  compare: (a: T, b: T) => number,
  take = Infinity,
): T[] {
  const out: T[] = []
  const heap: number[] = [] // list indexes, ordered by their head
  const pos = new Array<number>(lists.length).fill(0)
  const less = (x: number, y: number): boolean => {
    const c = compare(lists[x]![pos[x]!]!, lists[y]![pos[y]!]!)
    return c < 0 || (c === 0 && x < y)
  }
  const down = (i: number): void => {
    const n = heap.length
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) return
      const r = l + 1
      const m = r < n && less(heap[r]!, heap[l]!) ? r : l
      if (!less(heap[m]!, heap[i]!)) return
      const t = heap[i]!
      heap[i] = heap[m]!
      heap[m] = t
      i = m
    }
  }
  for (let i = 0; i < lists.length; i++) if (lists[i]!.length > 0) heap.push(i)
  for (let i = (heap.length >> 1) - 1; i >= 0; i--) down(i)
  while (heap.length > 0 && out.length < take) {
    const top = heap[0]!
    out.push(lists[top]![pos[top]!]!)
    pos[top]!++
    if (pos[top]! >= lists[top]!.length) {
      const last = heap.pop()!
      if (heap.length === 0) break
      heap[0] = last
    }
    down(0)
  }
  return out
}

function addValues(a: unknown, b: unknown): unknown {
  if (a === null || a === undefined) return b ?? null
  if (b === null || b === undefined) return a
  if (typeof a === 'number' && typeof b === 'number') return a + b
  if (typeof a === 'bigint' && typeof b === 'bigint') return a + b
  if (typeof a === 'string' && typeof b === 'string') return addDecimalStrings(a, b)
  // Mixed representations (a number and a DECIMAL string): fall back to numbers.
  return Number(a) + Number(b)
}

/** Combines aggregate rows from every shard per {@link AggregateMerge}. */
export function mergeAggregates(lists: readonly (readonly Row[])[], spec: AggregateMerge): Row[] {
  const groupBy = spec.groupBy ?? []
  const groups = new Map<string, Row>()
  const columns = Object.entries(spec.aggregate)
  for (const rows of lists) {
    for (const row of rows) {
      const key =
        groupBy.length === 0 ? '' : JSON.stringify(groupBy.map((c) => groupKeyValue(row[c])))
      const had = groups.get(key)
      if (had === undefined) {
        groups.set(key, { ...row })
        continue
      }
      for (const [column, how] of columns) {
        if (typeof how === 'object') continue
        const a = had[column]
        const b = row[column]
        if (how === 'count' || how === 'sum') had[column] = addValues(a, b)
        else if (b !== null && b !== undefined) {
          if (a === null || a === undefined) had[column] = b
          else {
            const c = compareValues(b, a)
            if ((how === 'min' && c < 0) || (how === 'max' && c > 0)) had[column] = b
          }
        }
      }
    }
  }
  const out = [...groups.values()]
  for (const row of out) {
    for (const [column, how] of columns) {
      if (typeof how !== 'object') continue
      const sum = row[how.avg.sum]
      const count = Number(row[how.avg.count])
      row[column] = sum === null || sum === undefined || count === 0 ? null : Number(sum) / count
    }
  }
  if (spec.orderBy !== undefined) out.sort(rowComparator(spec.orderBy))
  return out
}

function groupKeyValue(v: unknown): unknown {
  if (typeof v === 'bigint') return `${v}n`
  if (v instanceof Date) return v.toISOString()
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64')
  return v
}

/** Validates a merge spec at call time; returns the per-shard `LIMIT` to append, if any. */
export function checkMergeSpec(spec: MergeSpec | undefined): number | undefined {
  if (spec === undefined) return undefined
  if (typeof spec !== 'object' || spec === null) {
    argument.invalid('merge', '{ orderBy, limit?, offset? } or { aggregate }', spec)
  }
  if ('aggregate' in spec) {
    for (const [column, how] of Object.entries(spec.aggregate)) {
      const ok =
        how === 'count' ||
        how === 'sum' ||
        how === 'min' ||
        how === 'max' ||
        (typeof how === 'object' &&
          how !== null &&
          typeof how.avg?.sum === 'string' &&
          typeof how.avg?.count === 'string')
      if (!ok) {
        argument.invalid(
          `merge.aggregate.${column}`,
          "'count', 'sum', 'min', 'max' or { avg: { sum, count } }",
          how,
        )
      }
    }
    return undefined
  }
  if (!('orderBy' in spec)) argument.invalid('merge', 'an "orderBy" or an "aggregate" field', spec)
  rowComparator(spec.orderBy)
  const offset = argument.nonNegativeInteger('merge.offset', spec.offset ?? 0)
  if (spec.limit === undefined) return undefined
  return offset + argument.nonNegativeInteger('merge.limit', spec.limit)
}
