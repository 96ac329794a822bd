import {
  createPool,
  type FieldPacket,
  type Pool,
  type PoolConnection,
  type PoolOptions,
} from 'mysql2'
import { ShardTimeoutError, ShardUnavailableError } from '../errors.js'

/** Error codes of mysql2 and Node that mean the server, not the statement, failed. */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_NORMAL_SHUTDOWN',
  'ER_CONNECTION_KILLED',
  'ER_QUERY_INTERRUPTED',
])

/** Whether an error means the server could not be reached or dropped the connection. */
export function isConnectionError(error: unknown): boolean {
  if (error instanceof ShardUnavailableError || error instanceof ShardTimeoutError) return true
  if (typeof error !== 'object' || error === null) return false
  const e = error as { fatal?: unknown; code?: unknown }
  return e.fatal === true || (typeof e.code === 'string' && CONNECTION_CODES.has(e.code))
}

/** A server's connection settings: a `mysql://` URL or mysql2 pool options. */
export type ServerConfig = string | PoolOptions

export interface ServerDefaults {
  connectTimeoutMs: number
  connectionLimit: number
  multipleStatements: boolean
  trackGtid: boolean
}

const TRACK_GTID =
  "SET SESSION session_track_system_variables = IF(FIND_IN_SET('last_gtid', @@session.session_track_system_variables) OR @@session.session_track_system_variables = '*', @@session.session_track_system_variables, CONCAT_WS(',', NULLIF(@@session.session_track_system_variables, ''), 'last_gtid'))"

/** One server of a shard (its primary or a replica) and its mysql2 pool. */
export class Server {
  readonly id: string
  readonly shard: string
  readonly role: 'primary' | 'replica'
  readonly pool: Pool
  queries = 0
  errors = 0

  constructor(
    shard: string,
    role: 'primary' | 'replica',
    id: string,
    config: ServerConfig,
    defaults: ServerDefaults,
  ) {
    this.shard = shard
    this.role = role
    this.id = id
    const base: PoolOptions = typeof config === 'string' ? { uri: config } : { ...config }
    const options: PoolOptions = {
      connectTimeout: defaults.connectTimeoutMs,
      connectionLimit: defaults.connectionLimit,
      ...base,
    }
    if (defaults.multipleStatements) options.multipleStatements = true
    this.pool = createPool(options)
    if (defaults.trackGtid) {
      // Session tracking of last_gtid puts each write's GTID in its OK packet: read-your-writes
      // costs no extra round trip. Enabled per session, so the server config need not have it.
      this.pool.on('connection', (connection) => {
        connection.query(TRACK_GTID, () => {})
      })
    }
  }

  /** Takes a pooled connection within `timeoutMs`. */
  connection(timeoutMs: number): Promise<PoolConnection> {
    return new Promise((resolve, reject) => {
      let done = false
      const timer = setTimeout(() => {
        done = true
        reject(new ShardTimeoutError(this.shard, timeoutMs))
      }, timeoutMs)
      this.pool.getConnection((error, connection) => {
        if (done) {
          connection?.release()
          return
        }
        done = true
        clearTimeout(timer)
        if (error) reject(this.wrap(error))
        else resolve(connection)
      })
    })
  }

  /**
   * Runs one statement on a pooled connection, bounded by `timeoutMs` from the call (waiting
   * for a connection included). On timeout the connection is destroyed, so nothing late can
   * arrive on it, and a {@link ShardTimeoutError} is thrown.
   */
  query(
    sql: string,
    values: readonly unknown[],
    timeoutMs: number,
  ): Promise<[unknown, FieldPacket[]]> {
    this.queries++
    return new Promise((resolve, reject) => {
      let done = false
      let held: PoolConnection | undefined
      const timer = setTimeout(() => {
        done = true
        held?.destroy()
        this.errors++
        reject(new ShardTimeoutError(this.shard, timeoutMs))
      }, timeoutMs)
      this.pool.getConnection((error, connection) => {
        if (done) {
          connection?.release()
          return
        }
        if (error) {
          done = true
          clearTimeout(timer)
          this.errors++
          reject(this.wrap(error))
          return
        }
        held = connection
        connection.query({ sql, values: values as unknown[] }, (err, result, fields) => {
          if (done) return
          done = true
          clearTimeout(timer)
          if (err) {
            if (isConnectionError(err)) {
              connection.destroy()
              this.errors++
              reject(this.wrap(err))
            } else {
              connection.release()
              reject(err)
            }
            return
          }
          connection.release()
          resolve([result, fields as FieldPacket[]])
        })
      })
    })
  }

  /** Wraps a connection-level error in the typed, retryable error. */
  wrap(error: unknown): Error {
    if (error instanceof ShardUnavailableError || error instanceof ShardTimeoutError) return error
    if (!isConnectionError(error)) return error as Error
    const code = (error as { code?: unknown }).code
    return new ShardUnavailableError(
      this.shard,
      this.role,
      `${this.role} ${this.id} of shard "${this.shard}" is unavailable${typeof code === 'string' ? ` (${code})` : ''}`,
      { cause: error },
    )
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.pool.end(() => resolve())
    })
  }
}

/** Runs a statement on a connection already held (a transaction), bounded by `timeoutMs`. */
export function queryOn(
  server: Server,
  connection: PoolConnection,
  sql: string,
  values: readonly unknown[],
  timeoutMs: number,
): Promise<[unknown, FieldPacket[]]> {
  server.queries++
  return new Promise((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      done = true
      connection.destroy()
      server.errors++
      reject(new ShardTimeoutError(server.shard, timeoutMs))
    }, timeoutMs)
    connection.query({ sql, values: values as unknown[] }, (err, result, fields) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (err) {
        if (isConnectionError(err)) server.errors++
        reject(server.wrap(err))
        return
      }
      resolve([result, fields as FieldPacket[]])
    })
  })
}
