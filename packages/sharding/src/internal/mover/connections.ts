import { createPool, type Pool, type PoolConnection, type PoolOptions } from 'mysql2/promise'
import { InvalidArgumentError, ShardTimeoutError, ShardUnavailableError } from '../../errors.js'
import type { ShardConfig } from '../../shardRouterOptions.js'
import { isConnectionError } from '../server.js'

/**
 * The slot mover's connections: a small pool per shard's primary, made on first use, and the
 * one way to run a statement (bounded by the mover's `timeout`) and to turn a connection
 * failure into {@link ShardUnavailableError}.
 */
export class ShardConnections {
  readonly #shards: ReadonlyMap<string, ShardConfig>
  readonly #pools = new Map<string, Pool>()
  readonly #timeoutMs: number
  /** The shard of each connection handed out: a failure names the shard whose connection failed. */
  readonly #shardOf = new WeakMap<PoolConnection, string>()
  /** Connections a statement found broken: destroyed, not given back to the pool. */
  readonly #broken = new WeakSet<PoolConnection>()

  constructor(shards: ReadonlyMap<string, ShardConfig>, timeoutMs: number) {
    this.#shards = shards
    this.#timeoutMs = timeoutMs
  }

  /** Whether the mover was given shard `id`. */
  has(id: string): boolean {
    return this.#shards.has(id)
  }

  /**
   * Runs a statement on a connection, bounded by the mover's `timeout`; resolves with its rows or
   * result. A connection failure is {@link ShardUnavailableError} naming the connection's own
   * shard (a step works on a source and a target connection at once, nested: the shard of the
   * `on` that catches it may be the other one).
   */
  async query(connection: PoolConnection, sql: string, values: unknown[] = []): Promise<unknown> {
    try {
      const [result] = await connection.query({ sql, values, timeout: this.#timeoutMs })
      return result
    } catch (error) {
      const shard = this.#shardOf.get(connection)
      if (shard === undefined || !isConnectionError(error)) throw error
      this.#broken.add(connection)
      throw new ShardUnavailableError(
        shard,
        'primary',
        `primary of shard "${shard}" failed during a slot move`,
        { cause: error },
      )
    }
  }

  /** A connection of `shard`'s primary; a failure to get one is {@link ShardUnavailableError}. */
  async connect(shard: string): Promise<PoolConnection> {
    try {
      const connection = await this.#pool(shard).getConnection()
      this.#shardOf.set(connection, shard)
      return connection
    } catch (cause) {
      throw new ShardUnavailableError(
        shard,
        'primary',
        `primary of shard "${shard}" is unavailable to the slot mover`,
        { cause },
      )
    }
  }

  /** Runs `use` on a connection of `shard`'s primary; connection failures become {@link ShardUnavailableError}. */
  async on<R>(shard: string, use: (connection: PoolConnection) => Promise<R>): Promise<R> {
    const connection = await this.connect(shard)
    let broken = false
    try {
      return await use(connection)
    } catch (error) {
      // A failure of another shard's connection used inside `use` names that shard already.
      if (error instanceof ShardUnavailableError || error instanceof ShardTimeoutError) throw error
      if (isConnectionError(error)) {
        broken = true
        throw new ShardUnavailableError(
          shard,
          'primary',
          `primary of shard "${shard}" failed during a slot move`,
          { cause: error },
        )
      }
      throw error
    } finally {
      if (broken || this.#broken.has(connection)) connection.destroy()
      else connection.release()
    }
  }

  /** Ends every pool. */
  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((pool) => pool.end().catch(() => {})))
  }

  #pool(shard: string): Pool {
    let pool = this.#pools.get(shard)
    if (pool === undefined) {
      const config = this.#shards.get(shard)
      if (config === undefined)
        throw new InvalidArgumentError(
          `the slot map names shard "${shard}", which the mover was not given`,
        )
      const base: PoolOptions =
        typeof config.primary === 'string' ? { uri: config.primary } : { ...config.primary }
      // Values travel as the server prints them: no Date or float rounding on the way through.
      pool = createPool({
        connectionLimit: 4,
        connectTimeout: Math.min(this.#timeoutMs, 10_000),
        ...base,
        supportBigNumbers: true,
        bigNumberStrings: true,
        dateStrings: true,
        decimalNumbers: false,
      })
      pool.pool.on('error', () => {})
      this.#pools.set(shard, pool)
    }
    return pool
  }
}
