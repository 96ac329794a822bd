import { classifyStatement, statementBody } from './classifyStatement.js'
import {
  InvalidArgumentError,
  ScatterGatherError,
  type ShardFailure,
  UnknownShardError,
  UnsafeStatementError,
} from './errors.js'
import { argument, POSITIVE } from './internal/check.js'
import { tracedScatter } from './internal/queryTelemetry.js'
import type { RouterInternals, ScatterRouting } from './internal/routerInternals.js'
import { STREAMED } from './internal/server.js'
import { StreamMerge } from './internal/streamMerge.js'
import {
  type AggregateMerge,
  checkMergeSpec,
  type MergeSpec,
  mergeAggregates,
  type OrderByMerge,
  type Row,
  rowComparator,
} from './mergeSpec.js'
import { slotFor } from './shardKey.js'
import type { ScatterOptions } from './shardRouterOptions.js'

/** The merged answer of {@link ShardRouter.all}. */
export interface ScatterResult<T extends object = Row> {
  /** The merged rows, of the row type given to {@link ShardRouter.all} (`router.all<OrderRow>(…)`). */
  rows: T[]
  /** Whether some shard failed and its rows are missing (only with `onShardError: 'partial'`). */
  partial: boolean
  /** Every shard that failed, with its error. */
  failures: ShardFailure[]
  /** The shards that answered, in shard order. */
  shards: string[]
}

/**
 * The body of {@link ShardRouter.all}, once the router is known open: checks the call, appends
 * the merge's `LIMIT`, runs the statement on every shard and merges the answers.
 */
export async function scatterGather<T extends object>(
  router: RouterInternals,
  sql: string,
  params: readonly unknown[],
  merge: MergeSpec | undefined,
  options: ScatterOptions,
): Promise<ScatterResult<T>> {
  if (!Array.isArray(params))
    throw new InvalidArgumentError(
      `invalid argument "params": expected an array of values for "?" placeholders, got ${typeof params}`,
    )
  const limit = checkMergeSpec(merge)
  const onShardError = options.onShardError ?? router.onShardError
  argument.oneOf('onShardError', onShardError, ['error', 'partial'])
  const timeoutMs =
    options.timeout === undefined
      ? router.scatterTimeoutMs
      : argument.duration('timeout', options.timeout, POSITIVE)
  const slotKey = options.slotKey
  if (slotKey === undefined) {
    if (router.slotMapped)
      throw new InvalidArgumentError(
        'invalid argument "slotKey": expected the result column holding each row\'s shard key (or false for rows no move copies) on a router with a slot map: its shards hold copies of moving slots, which all() would count twice; got undefined',
      )
  } else if (slotKey !== false) argument.string('slotKey', slotKey, { pattern: COLUMN })
  const statement = classifyStatement(sql)
  if (statement.multi) {
    throw new UnsafeStatementError(
      'one statement per call: the SQL holds several (values belong in placeholders)',
    )
  }
  let text = sql
  if (limit !== undefined) {
    if (statement.hasLimit) {
      throw new InvalidArgumentError(
        'invalid merge: the SQL has its own LIMIT; give limit/offset in the merge and the router asks each shard for LIMIT offset + limit',
      )
    }
    // Trailing comments go, and the LIMIT gets its own line: a `--` or `#` comment must not
    // swallow it (each shard would return its whole result).
    text = `${statementBody(sql)}\nLIMIT ${limit}`
  }
  router.counters.scatterCalls++
  return tracedScatter(router.instruments, statement.operation, router.shards.length, async () => {
    const result =
      typeof slotKey === 'string'
        ? await filtered<T>(
            router,
            sql,
            text,
            params,
            merge,
            limit,
            slotKey,
            options,
            timeoutMs,
            onShardError,
          )
        : merge !== undefined && !('aggregate' in merge)
          ? await streamMerged<T>(
              router,
              text,
              params,
              merge,
              limit,
              options,
              timeoutMs,
              onShardError,
            )
          : await gathered<T>(router, text, params, merge, options, timeoutMs, onShardError)
    return { result, failedShards: result.failures.length }
  })
}

/** A result column's name, as `slotKey` gives it (a plain or quoted alias of the SELECT list). */
const COLUMN = /^[^\0]{1,256}$/

/**
 * `all()` with a `slotKey`: every shard's answer, less the rows of slots the shard does not own
 * in the map the call routed with, then merged. An `ORDER BY` merge with a `limit` asks a shard
 * again, for more rows, when dropped rows left it short of `offset + limit`: the rows it did not
 * send may be needed. No streaming: the rows are sorted once every shard has answered.
 */
async function filtered<T extends object>(
  router: RouterInternals,
  sql: string,
  text: string,
  params: readonly unknown[],
  merge: MergeSpec | undefined,
  limit: number | undefined,
  slotKey: string,
  options: ScatterOptions,
  timeoutMs: number,
  onShardError: 'error' | 'partial',
): Promise<ScatterResult<T>> {
  const routing = await router.scatterRouting()
  const body = limit === undefined ? text : statementBody(sql)
  const settled = await Promise.allSettled(
    router.shards.map(async (shard) => {
      let asked = limit
      for (;;) {
        const answer = await router.route(
          shard,
          asked === undefined ? body : `${body}\nLIMIT ${asked}`,
          params,
          options,
          timeoutMs,
        )
        if (!Array.isArray(answer))
          throw new InvalidArgumentError(
            'invalid argument "slotKey": it filters the rows of a read, and the statement returned none (give slotKey: false for a write)',
          )
        const kept = ownRows(answer as Row[], shard.index, routing, slotKey, shard.id)
        // Enough rows kept, or the shard sent all it has: else the rows after those sent may count.
        if (asked === undefined || kept.length >= limit! || answer.length < asked) return kept
        asked += answer.length - kept.length
      }
    }),
  )
  const lists: Row[][] = []
  const answered: string[] = []
  const failures: ShardFailure[] = []
  settled.forEach((outcome, i) => {
    const id = router.shards[i]!.id
    if (outcome.status === 'fulfilled') {
      answered.push(id)
      lists.push(outcome.value)
    } else failures.push({ shard: id, error: outcome.reason })
  })
  // A slotKey the rows do not have is the caller's mistake, not a shard's failure.
  const misused = failures.find((failure) => failure.error instanceof InvalidArgumentError)
  if (misused !== undefined) throw misused.error
  // Slots of a shard the router does not have: their rows are on no shard it can ask.
  for (const id of routing.unknown) failures.push({ shard: id, error: new UnknownShardError(id) })
  if (failures.length > 0 && onShardError === 'error') {
    router.counters.scatterFailed++
    throw new ScatterGatherError(failures)
  }
  if (failures.length > 0) router.counters.scatterPartial++
  let rows: Row[]
  if (merge === undefined) rows = lists.flat()
  else if ('aggregate' in merge) rows = mergeAggregates(lists, merge)
  else {
    // A stable sort of the lists in shard order keeps ties in shard order, as the stream merge does.
    rows = lists.flat().sort(rowComparator(merge.orderBy))
    const offset = merge.offset ?? 0
    rows = rows.slice(offset, limit === undefined ? undefined : limit)
  }
  return { rows: rows as T[], partial: failures.length > 0, failures, shards: answered }
}

/** The rows of `rows` whose `slotKey` hashes to a slot shard `index` owns in `routing`. */
function ownRows(
  rows: Row[],
  index: number,
  routing: ScatterRouting,
  slotKey: string,
  shardId: string,
): Row[] {
  const { table, slots } = routing
  const kept: Row[] = []
  for (const row of rows) {
    if (!(slotKey in row))
      throw new InvalidArgumentError(
        `invalid argument "slotKey": expected a column of the result, got ${JSON.stringify(slotKey)} (shard "${shardId}"'s rows have no such column: select it)`,
      )
    const value = row[slotKey]
    // A row no key routes is never moved: it stays where it is.
    if (value === null || value === undefined || value === '') {
      kept.push(row)
      continue
    }
    const key =
      typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint'
        ? value
        : String(value)
    if (table[slotFor(key, slots)] === index) kept.push(row)
  }
  return kept
}

/** The plain and aggregate merges of {@link ShardRouter.all}: every shard's whole answer, then merged. */
async function gathered<T extends object>(
  router: RouterInternals,
  text: string,
  params: readonly unknown[],
  merge: MergeSpec | undefined,
  options: ScatterOptions,
  timeoutMs: number,
  onShardError: 'error' | 'partial',
): Promise<ScatterResult<T>> {
  const settled = await Promise.allSettled(
    router.shards.map((shard) => {
      try {
        return router.route(shard, text, params, options, timeoutMs)
      } catch (error) {
        return Promise.reject(error)
      }
    }),
  )
  const lists: Row[][] = []
  const answered: string[] = []
  const failures: ShardFailure[] = []
  settled.forEach((outcome, i) => {
    const id = router.shards[i]!.id
    if (outcome.status === 'fulfilled') {
      answered.push(id)
      lists.push(Array.isArray(outcome.value) ? (outcome.value as Row[]) : [outcome.value as Row])
    } else failures.push({ shard: id, error: outcome.reason })
  })
  if (failures.length > 0 && onShardError === 'error') {
    router.counters.scatterFailed++
    throw new ScatterGatherError(failures)
  }
  if (failures.length > 0) router.counters.scatterPartial++
  let rows: Row[]
  if (merge === undefined) rows = lists.flat()
  else rows = mergeAggregates(lists, merge as AggregateMerge)
  return { rows: rows as T[], partial: failures.length > 0, failures, shards: answered }
}

/**
 * The `ORDER BY` merge of {@link ShardRouter.all}: every shard's rows stream into a k-way
 * merge as they arrive, and the call returns once `offset + limit` rows are merged (the
 * shards still sending are drained in the background and their connections released).
 * Reads that wait for a GTID on a replica arrive whole, and merge as they come.
 */
async function streamMerged<T extends object>(
  router: RouterInternals,
  sql: string,
  params: readonly unknown[],
  merge: OrderByMerge,
  limit: number | undefined,
  options: ScatterOptions,
  timeoutMs: number,
  onShardError: 'error' | 'partial',
): Promise<ScatterResult<T>> {
  const shards = router.shards
  const merger = new StreamMerge<Row>(
    shards.map((shard) => shard.id),
    rowComparator(merge.orderBy),
    limit ?? Infinity,
    onShardError,
  )
  shards.forEach((shard, i) => {
    let answer: Promise<unknown>
    try {
      answer = router.route(shard, sql, params, options, timeoutMs, merger.sink(i))
    } catch (error) {
      answer = Promise.reject(error)
    }
    answer.then(
      (rows) => {
        if (rows === STREAMED) merger.end(i)
        else merger.end(i, Array.isArray(rows) ? rows : [rows])
      },
      (error: unknown) => merger.fail(i, error),
    )
  })
  const { rows, failures, answered } = await merger.done
  if (failures.length > 0 && onShardError === 'error') {
    router.counters.scatterFailed++
    throw new ScatterGatherError(failures)
  }
  if (failures.length > 0) router.counters.scatterPartial++
  const offset = merge.offset ?? 0
  return {
    rows: (offset > 0 ? rows.slice(offset) : rows) as T[],
    partial: failures.length > 0,
    failures,
    shards: answered,
  }
}
