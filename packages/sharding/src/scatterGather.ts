import { classifyStatement, statementBody } from './classifyStatement.js'
import {
  InvalidArgumentError,
  ScatterGatherError,
  type ShardFailure,
  UnsafeStatementError,
} from './errors.js'
import { argument, POSITIVE } from './internal/check.js'
import { tracedScatter } from './internal/queryTelemetry.js'
import type { RouterInternals } from './internal/routerInternals.js'
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
      merge !== undefined && !('aggregate' in merge)
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
