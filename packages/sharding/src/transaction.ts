import { CausalToken } from './causalToken.js'
import { classifyStatement } from './classifyStatement.js'
import { InvalidArgumentError, UnsafeStatementError } from './errors.js'
import { argument, POSITIVE } from './internal/check.js'
import { tracedTransaction } from './internal/queryTelemetry.js'
import type { RouterInternals, Scope, Shard } from './internal/routerInternals.js'
import { GUARDED, isConnectionError, lastGtidOf, queryOn } from './internal/server.js'
import type { QueryResult, Row } from './mergeSpec.js'
import type { TransactionOptions } from './shardRouterOptions.js'

/** A transaction on one shard's primary, given to the callback of {@link ShardRouter.transaction}. */
export interface ShardTransaction {
  /** The shard the transaction runs on. */
  readonly shard: string
  /**
   * Runs a statement inside the transaction (always on the primary), values through
   * placeholders; typed like {@link ShardRouter.query} (`tx.query<OrderRow[]>(…)`).
   * @throws once the transaction has ended.
   */
  query<T extends QueryResult = Row[]>(sql: string, params?: readonly unknown[]): Promise<T>
}

/**
 * The body of {@link ShardRouter.transaction}, once the router is known open and the shard
 * found: takes a primary connection (through the breaker when it is engaged), runs `fn`
 * between `START TRANSACTION` and `COMMIT` in an async context that sends the shard's
 * statements to the transaction, and rolls back (or destroys the connection) on failure.
 */
export async function runTransaction<R>(
  router: RouterInternals,
  shard: Shard,
  fn: (tx: ShardTransaction) => Promise<R>,
  options: TransactionOptions,
): Promise<R> {
  const timeoutMs =
    options.timeout === undefined
      ? router.queryTimeoutMs
      : argument.duration('timeout', options.timeout, POSITIVE)
  if (options.isolationLevel !== undefined) {
    argument.oneOf('isolationLevel', options.isolationLevel, [
      'READ UNCOMMITTED',
      'READ COMMITTED',
      'REPEATABLE READ',
      'SERIALIZABLE',
    ])
  }
  return tracedTransaction(router.instruments, shard.id, () =>
    transact(router, shard, fn, timeoutMs, options),
  )
}

/** {@link runTransaction} once its options are checked, in the transaction's span. */
async function transact<R>(
  router: RouterInternals,
  shard: Shard,
  fn: (tx: ShardTransaction) => Promise<R>,
  timeoutMs: number,
  options: TransactionOptions,
): Promise<R> {
  const server = shard.primary
  const connection = await (router.guarded(shard)
    ? shard.breaker!.execute(() => server.connection(timeoutMs, GUARDED))
    : server.connection(timeoutMs)
  ).catch((error: unknown) => {
    throw router.breakerError(shard, error)
  })
  let open = true
  let broken = false
  const run = async (sql: string, params: readonly unknown[]): Promise<unknown> => {
    if (!open)
      throw new InvalidArgumentError(
        'the transaction has ended: run statements inside its callback',
      )
    if (!Array.isArray(params))
      throw new InvalidArgumentError(
        `invalid argument "params": expected an array of values for "?" placeholders, got ${typeof params}`,
      )
    const statement = classifyStatement(sql)
    if (statement.multi)
      throw new UnsafeStatementError(
        'one statement per call: the SQL holds several (values belong in placeholders)',
      )
    shard.stats.primaryQueries++
    try {
      return await queryOn(server, connection, sql, params, timeoutMs)
    } catch (error) {
      if (isConnectionError(error)) broken = true
      throw error
    }
  }
  const tx: ShardTransaction = {
    shard: shard.id,
    query: <T extends QueryResult = Row[]>(sql: string, params: readonly unknown[] = []) =>
      run(sql, params) as Promise<T>,
  }
  try {
    if (options.isolationLevel !== undefined) {
      await queryOn(
        server,
        connection,
        `SET TRANSACTION ISOLATION LEVEL ${options.isolationLevel}`,
        [],
        timeoutMs,
      )
    }
    await queryOn(server, connection, 'START TRANSACTION', [], timeoutMs)
    router.enterContext()
    const parent = router.context.getStore()
    const store: Scope = {
      use: parent?.use,
      consistency: parent?.consistency,
      maxLagMs: parent?.maxLagMs,
      token: parent?.token ?? CausalToken.empty,
      since: parent?.since ?? performance.now(),
      parent,
      tx: { shard: shard.id, run },
    }
    const result = await router.context.run(store, () => fn(tx))
    const commit = await queryOn(server, connection, 'COMMIT', [], timeoutMs)
    open = false
    router.counters.committed++
    const gtid = lastGtidOf(commit)
    if (gtid !== undefined) router.noteWrite(shard.id, gtid, parent)
    return result
  } catch (error) {
    open = false
    router.counters.rolledBack++
    if (!broken && !isConnectionError(error)) {
      await queryOn(server, connection, 'ROLLBACK', [], timeoutMs).catch(() => {
        broken = true
      })
    } else {
      broken = true
    }
    throw server.wrap(error)
  } finally {
    open = false
    if (broken) connection.destroy()
    else connection.release()
  }
}
