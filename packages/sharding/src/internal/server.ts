import { createPool, type Pool, type PoolConnection, type PoolOptions } from 'mysql2'
import { ShardTimeoutError, ShardUnavailableError } from '../errors.js'
import { locate, type QueryInstruments, type QueryOp, ServerTelemetry } from './queryTelemetry.js'
import type { RowSink } from './streamMerge.js'

/** What {@link Server.stream} resolves with: the rows went to the sink. */
export const STREAMED: unique symbol = Symbol('streamed')

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
  // mysql2: a statement on a connection that was ended (the pool of a replaced primary).
  'PROTOCOL_ENQUEUE_AFTER_QUIT',
])

/**
 * Whether a primary refused a write because it is read-only: demoted, a switchover under way.
 * The server, not the statement, refuses (the same write succeeds on the new primary). On a
 * replica it is the statement's fault (a write sent there), never the replica's failure.
 */
function isReadOnlyPrimary(error: unknown, role: 'primary' | 'replica'): boolean {
  return (
    role === 'primary' &&
    typeof error === 'object' &&
    error !== null &&
    (error as { code?: unknown }).code === 'ER_OPTION_PREVENTS_STATEMENT'
  )
}

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
  /** The router's tracer and histograms. */
  instruments: QueryInstruments
}

const TRACK_GTID =
  "SET SESSION session_track_system_variables = IF(FIND_IN_SET('last_gtid', @@session.session_track_system_variables) OR @@session.session_track_system_variables = '*', @@session.session_track_system_variables, CONCAT_WS(',', NULLIF(@@session.session_track_system_variables, ''), 'last_gtid'))"

/** Called with the GTID a write's OK packet carried (session-tracked `last_gtid`). */
export type GtidSink = (gtid: string, scope: unknown) => void

/**
 * Called when a statement failed because the server could not be reached, before the caller
 * sees the error; `flags` are the statement's ({@link GUARDED}).
 */
export type FailureSink = (error: Error, flags: number) => void

/** Statement flag: the statement runs through the primary's breaker, which counts it itself. */
export const GUARDED = 1
/** Statement flag: a health check; its failure is not reported to `onFailure`. */
export const QUIET = 2

function ignoreError(): void {}

/** The GTID of a write's OK packet, if the session tracks `last_gtid`. */
export function lastGtidOf(result: unknown): string | undefined {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) return undefined
  const gtid = (result as { stateChanges?: { systemVariables?: Record<string, string> } })
    .stateChanges?.systemVariables?.last_gtid
  return typeof gtid === 'string' && gtid !== '' ? gtid : undefined
}

/** One server of a shard (its primary or a replica) and its mysql2 pool. */
export class Server {
  readonly id: string
  readonly shard: string
  readonly role: 'primary' | 'replica'
  readonly pool: Pool
  queries = 0
  errors = 0
  /** Receives each write's GTID (primaries of shards with replicas). */
  onGtid: GtidSink | undefined
  /** Hears of every connection failure. */
  onFailure: FailureSink | undefined
  /** Spans and durations of this server's statements (health checks have none). */
  readonly telemetry: ServerTelemetry
  /** Where the server is, `host:port` or a socket path (never the user or password). */
  readonly address: string
  /** Calls not settled yet: what a replaced primary's drain waits for. */
  readonly pending = new Set<PendingCall<unknown>>()
  /** Replaced (see {@link Server.retire}): its pool takes no new statement. */
  retired = false

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
    this.telemetry = new ServerTelemetry(defaults.instruments, shard, role, config)
    const located = locate(config)
    this.address =
      typeof config === 'object' && config.socketPath !== undefined
        ? config.socketPath
        : `${located.address}:${located.port}`
    const base: PoolOptions = typeof config === 'string' ? { uri: config } : { ...config }
    const options: PoolOptions = {
      connectTimeout: defaults.connectTimeoutMs,
      connectionLimit: defaults.connectionLimit,
      ...base,
    }
    if (defaults.multipleStatements) options.multipleStatements = true
    this.pool = createPool(options)
    // mysql2 reports a connection's failure to the statement that was waiting on it, and also
    // as an 'error' event on the connection, listened to only with once(): a second error on
    // the same connection (or one on a pool that someone else emits) would be thrown as
    // unhandled and crash the process. Every statement already gets its error through its
    // callback; these listeners only make sure an event never goes unheard.
    this.pool.on('error', ignoreError)
    const trackGtid = defaults.trackGtid
    const telemetry = this.telemetry
    this.pool.on('connection', (connection) => {
      connection.on('error', ignoreError)
      // db.system.name: mysql2 keeps the handshake's server version only in a private field.
      if (telemetry.system === undefined)
        telemetry.noteServerVersion(
          (connection as unknown as { _handshakePacket?: { serverVersion?: unknown } })
            ._handshakePacket?.serverVersion,
        )
      // Session tracking of last_gtid puts each write's GTID in its OK packet: read-your-writes
      // costs no extra round trip. Enabled per session, so the server config need not have it.
      if (trackGtid) connection.query(TRACK_GTID, ignoreError)
    })
  }

  /** Takes a pooled connection within `timeoutMs`. */
  connection(timeoutMs: number, flags = 0): Promise<PoolConnection> {
    return this.#call(timeoutMs, flags, undefined, (connection, call) =>
      call.succeed(connection, false),
    )
  }

  /**
   * Runs one statement on a pooled connection, bounded by `timeoutMs` from the call (waiting
   * for a connection included), and resolves with what mysql2 returns first (rows or a
   * `ResultSetHeader`). On timeout the connection is destroyed, so nothing late can arrive
   * on it, and a {@link ShardTimeoutError} is thrown. A write's GTID goes to `onGtid` with
   * `scope` before the promise settles. `op`, the statement's span (from `telemetry.begin`),
   * ends when the statement settles.
   */
  query(
    sql: string,
    values: readonly unknown[],
    timeoutMs: number,
    scope?: unknown,
    flags = 0,
    op?: QueryOp,
  ): Promise<unknown> {
    this.queries++
    return this.#call(timeoutMs, flags, op, (connection, call) => {
      connection.query({ sql, values: values as unknown[] }, (err, result) => {
        if (call.done) return
        if (err) {
          call.failStatement(err)
          return
        }
        if (this.onGtid !== undefined) {
          const gtid = lastGtidOf(result)
          if (gtid !== undefined) this.onGtid(gtid, scope)
        }
        call.succeed(result)
      })
    })
  }

  /**
   * Runs one read and hands each row to `sink` as it arrives (mysql2's row events), bounded
   * by `timeoutMs` like {@link Server.query}; resolves with {@link STREAMED} after the last row.
   */
  stream(
    sql: string,
    values: readonly unknown[],
    timeoutMs: number,
    sink: RowSink,
    flags = 0,
    op?: QueryOp,
  ): Promise<typeof STREAMED> {
    this.queries++
    return this.#call(timeoutMs, flags, op, (connection, call) => {
      const query = connection.query({ sql, values: values as unknown[] })
      query.on('result', (row: unknown) => {
        if (!call.done) sink.push(row)
      })
      query.on('error', (err: unknown) => call.failStatement(err))
      query.on('end', () => call.succeed(STREAMED))
    })
  }

  /**
   * What {@link Server.connection}, {@link Server.query} and {@link Server.stream} share: a
   * pooled connection taken within `timeoutMs` of the call and handed to `use`, which settles
   * the call through the {@link PendingCall}. At the deadline the call fails with
   * {@link ShardTimeoutError} and a connection it holds is destroyed.
   */
  #call<T>(
    timeoutMs: number,
    flags: number,
    op: QueryOp | undefined,
    use: (connection: PoolConnection, call: PendingCall<T>) => void,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const call = new PendingCall<T>(this, flags, op, resolve, reject)
      this.pending.add(call as PendingCall<unknown>)
      call.timer = setTimeout(() => call.timeOut(timeoutMs), timeoutMs)
      this.pool.getConnection((error, connection) => {
        if (call.done) {
          connection?.release()
          return
        }
        if (error) {
          // A replaced primary's pool is closed: the statement was never sent.
          call.failConnecting(
            this.retired ? this.replaced('the statement was not sent', error) : error,
          )
          return
        }
        call.held = connection
        use(connection, call)
      })
    })
  }

  /** Wraps a connection-level error in the typed, retryable error. */
  wrap(error: unknown): Error {
    if (error instanceof ShardUnavailableError || error instanceof ShardTimeoutError) return error
    if (!isConnectionError(error) && !isReadOnlyPrimary(error, this.role)) return error as Error
    const code = (error as { code?: unknown }).code
    return new ShardUnavailableError(
      this.shard,
      this.role,
      code === 'ER_OPTION_PREVENTS_STATEMENT'
        ? `${this.role} ${this.id} of shard "${this.shard}" is read-only (ER_OPTION_PREVENTS_STATEMENT): demoted, or a switchover is under way`
        : `${this.role} ${this.id} of shard "${this.shard}" is unavailable${typeof code === 'string' ? ` (${code})` : ''}`,
      { cause: error },
    )
  }

  /** Counts and reports a failure; returns the error to throw (connection errors wrapped). */
  fail(error: unknown, flags = 0): Error {
    const wrapped = this.wrap(error)
    if (isConnectionError(wrapped)) {
      this.errors++
      if ((flags & QUIET) === 0) this.onFailure?.(wrapped, flags)
    }
    return wrapped
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.pool.end(() => resolve())
    })
  }

  /** The retryable error of a statement cut off by {@link Server.retire}. */
  replaced(what: string, cause?: unknown): ShardUnavailableError {
    return new ShardUnavailableError(
      this.shard,
      this.role,
      `${this.role} ${this.id} (${this.address}) of shard "${this.shard}" was replaced: ${what}`,
      { cause },
    )
  }

  /**
   * Takes a replaced primary out of service: its pool takes no new statement (one waiting for
   * a connection fails at once), statements running on it get `drainMs` to finish, and then
   * fail with a retryable {@link ShardUnavailableError} and their connections are destroyed.
   * Resolves once the pool is closed, or the drain time is up, with how many calls were in
   * flight and how many were cut off.
   */
  async retire(drainMs: number): Promise<{ inFlight: number; abandoned: number }> {
    this.retired = true
    const inFlight = this.pending.size
    // mysql2: queued requests for a connection fail ('Pool is closed.'); each connection quits
    // after the statement it runs. A dead or hung server never answers, hence the bound.
    const ended = new Promise<boolean>((resolve) => {
      this.pool.end(() => resolve(true))
    })
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), drainMs)
    })
    const drained = await Promise.race([ended, expired])
    clearTimeout(timer)
    let abandoned = 0
    if (!drained || this.pending.size > 0) {
      for (const call of [...this.pending]) {
        if (
          call.abandon(
            this.replaced(
              `the statement was still running after ${drainMs} ms; it may or may not have been applied`,
            ),
          )
        )
          abandoned++
      }
    }
    return { inFlight, abandoned }
  }
}

/**
 * Runs a statement on a connection already held (a transaction), bounded by `timeoutMs`, in a
 * span of its own (a child of the transaction's).
 */
export function queryOn(
  server: Server,
  connection: PoolConnection,
  sql: string,
  values: readonly unknown[],
  timeoutMs: number,
): Promise<unknown> {
  server.queries++
  const op = server.telemetry.begin(sql)
  return new Promise((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      done = true
      connection.destroy()
      const error = server.fail(new ShardTimeoutError(server.shard, timeoutMs))
      op.fail(error)
      reject(error)
    }, timeoutMs)
    connection.query({ sql, values: values as unknown[] }, (err, result) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (err) {
        const error = server.fail(err)
        op.fail(error)
        reject(error)
        return
      }
      op.end(result)
      resolve(result)
    })
  })
}

/** One call of a {@link Server} in progress: settled once, by its outcome or its deadline. */
class PendingCall<T> {
  /** Settled (or timed out): whatever arrives later is dropped. */
  done = false
  /** The pooled connection, once taken. */
  held: PoolConnection | undefined
  timer: NodeJS.Timeout | undefined
  readonly #server: Server
  readonly #flags: number
  readonly #op: QueryOp | undefined
  readonly #resolve: (value: T) => void
  readonly #reject: (error: unknown) => void

  constructor(
    server: Server,
    flags: number,
    op: QueryOp | undefined,
    resolve: (value: T) => void,
    reject: (error: unknown) => void,
  ) {
    this.#server = server
    this.#flags = flags
    this.#op = op
    this.#resolve = resolve
    this.#reject = reject
  }

  /** Resolves; the connection goes back to the pool unless the caller keeps it. */
  succeed(value: T, release = true): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    this.#server.pending.delete(this as PendingCall<unknown>)
    if (release) this.held?.release()
    this.#op?.end(value)
    this.#resolve(value)
  }

  /** No connection could be had. */
  failConnecting(error: unknown): void {
    this.done = true
    clearTimeout(this.timer)
    this.#failWith(this.#server.fail(error, this.#flags))
  }

  #failWith(error: unknown): void {
    this.#server.pending.delete(this as PendingCall<unknown>)
    this.#op?.fail(error)
    this.#reject(error)
  }

  /**
   * Cut off by a replaced primary's drain: fails with `error` and destroys the connection;
   * false if it had already settled. Not reported as the server's failure.
   */
  abandon(error: Error): boolean {
    if (this.done) return false
    this.done = true
    clearTimeout(this.timer)
    this.held?.destroy()
    this.#failWith(error)
    return true
  }

  /**
   * The statement failed: a connection error destroys the connection and is reported (wrapped);
   * a read-only primary's refusal is reported (wrapped) and the connection handed back; an SQL
   * error hands the healthy connection back and reaches the caller as it is.
   */
  failStatement(error: unknown): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    const connection = this.held as PoolConnection
    if (isConnectionError(error)) {
      connection.destroy()
      this.#failWith(this.#server.fail(error, this.#flags))
    } else if (isReadOnlyPrimary(error, this.#server.role)) {
      // The server's failure, on a healthy connection.
      connection.release()
      this.#failWith(this.#server.fail(error, this.#flags))
    } else {
      connection.release()
      this.#failWith(error)
    }
  }

  /** The deadline passed first. */
  timeOut(timeoutMs: number): void {
    if (this.done) return
    this.done = true
    this.held?.destroy()
    this.#failWith(
      this.#server.fail(new ShardTimeoutError(this.#server.shard, timeoutMs), this.#flags),
    )
  }
}
