import { durationHistogram, errorType } from '@ballast/shared'
import {
  type Attributes,
  context,
  createNoopMeter,
  type Histogram,
  type Meter,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { PoolOptions } from 'mysql2'
import { classifyStatement } from '../classifyStatement.js'
import { isShardingError } from '../errors.js'

/**
 * Marks a span failed: `error.type` (the error's stable code: `E_SHARD_UNAVAILABLE`,
 * `ER_DUP_ENTRY`) and status ERROR. The status message is kept only for the package's own
 * errors: a server's message may quote a row's values (`Duplicate entry 'ann@example.com'`),
 * and a callback's error is the application's, so neither goes into a span.
 */
export function failSpan(span: Span, error: unknown): void {
  span.setAttribute('error.type', errorType(error))
  span.setStatus(
    isShardingError(error)
      ? { code: SpanStatusCode.ERROR, message: error.message }
      : { code: SpanStatusCode.ERROR },
  )
}

/** Attribute names of the `ballast.sharding.*` namespace (where the semantic conventions have none). */
export const SHARD = 'ballast.sharding.shard'
export const ROLE = 'ballast.sharding.role'
export const REPLICA = 'ballast.sharding.replica'
export const GTID_WAIT_OUTCOME = 'ballast.sharding.gtid_wait.outcome'
export const FALLBACK_REASON = 'ballast.sharding.fallback.reason'

export const SCATTER_OUTCOME = 'ballast.sharding.scatter.outcome'
export const TRANSACTION_OUTCOME = 'ballast.sharding.transaction.outcome'

/** The name of the span of a GTID wait, a child of the read that waited. */
export const GTID_WAIT_SPAN = 'ballast.sharding.gtid_wait'
/** The INTERNAL span of a scatter-gather call (`all()`), parent of its per-shard statements. */
export const SCATTER_SPAN = 'ballast.sharding.scatter'
/** The INTERNAL span of a transaction, parent of its statements (`START TRANSACTION` to `COMMIT`). */
export const TRANSACTION_SPAN = 'ballast.sharding.transaction'

/** The tracer and histograms one router's statements record into, shared by its servers. */
export interface QueryInstruments {
  readonly tracer: Tracer
  /**
   * Whether the meter records anything: `false` for the API's no-op meter (no SDK), when a
   * statement that no span records either reads no clock.
   */
  readonly metered: boolean
  /** `db.client.operation.duration`: every statement's round trip. */
  readonly duration: Histogram
  /** `ballast.sharding.gtid_wait.duration`: how long replicas took to apply a causal token. */
  readonly gtidWaitDuration: Histogram
  /** `ballast.sharding.scatter.duration`: every `all()` call. */
  readonly scatterDuration: Histogram
}

/** Makes a router's tracer and histograms. */
export function queryInstruments(meter: Meter, tracer: Tracer): QueryInstruments {
  return {
    tracer,
    metered: meter !== createNoopMeter(),
    duration: durationHistogram(
      meter,
      'db.client.operation.duration',
      'Duration of database client operations: one statement on one server',
    ),
    gtidWaitDuration: durationHistogram(
      meter,
      'ballast.sharding.gtid_wait.duration',
      'How long a read-your-writes read waited for its replica to apply the causal token (measured by the replica)',
    ),
    scatterDuration: durationHistogram(
      meter,
      'ballast.sharding.scatter.duration',
      'Duration of scatter-gather calls (all()), every shard included',
    ),
  }
}

/** Where a server is, for `db.namespace`, `server.address` and `server.port`: never its user or password. */
export function locate(config: string | PoolOptions): {
  namespace: string | undefined
  address: string | undefined
  port: number | undefined
} {
  let uri: string | undefined
  let options: PoolOptions | undefined
  if (typeof config === 'string') uri = config
  else {
    options = config
    uri = config.uri
  }
  let namespace = options?.database
  let address = options?.socketPath ?? options?.host
  let port = options?.port
  if (uri !== undefined) {
    try {
      const url = new URL(uri)
      namespace ??= decodeURIComponent(url.pathname.replace(/^\//, '')) || undefined
      address ??= url.hostname || undefined
      port ??= url.port === '' ? undefined : Number(url.port)
    } catch {
      // mysql2 refuses the URL itself; the server then has no location to report.
    }
  }
  if (options?.socketPath === undefined) {
    address ??= 'localhost'
    port ??= 3306
  }
  return { namespace, address, port }
}

/** What a statement's span and duration carry, per operation name: made once per server. */
interface Operation {
  readonly spanName: string
  readonly attributes: Attributes
  /** The `db.system.name` the attributes hold (`undefined` before the server was reached). */
  readonly system: string | undefined
}

/**
 * The telemetry of one server (a shard's primary or replica): its statements' spans and
 * `db.client.operation.duration`, with attributes made once per operation name, so a statement
 * allocates its span and nothing else for telemetry.
 */
export class ServerTelemetry {
  /** `mariadb` or `mysql`, from the server's handshake; `undefined` until a connection was made. */
  system: string | undefined
  readonly instruments: QueryInstruments
  readonly shard: string
  readonly #base: Attributes
  readonly #namespace: string | undefined
  readonly #operations = new Map<string, Operation>()
  readonly #waitAttributes: Record<'caught_up' | 'timed_out', Attributes>

  constructor(
    instruments: QueryInstruments,
    shard: string,
    role: 'primary' | 'replica',
    config: string | PoolOptions,
  ) {
    this.instruments = instruments
    this.shard = shard
    const { namespace, address, port } = locate(config)
    this.#namespace = namespace
    const base: Attributes = { [SHARD]: shard, [ROLE]: role }
    if (namespace !== undefined) base['db.namespace'] = namespace
    if (address !== undefined) base['server.address'] = address
    if (port !== undefined) base['server.port'] = port
    this.#base = base
    this.#waitAttributes = {
      caught_up: { [SHARD]: shard, [GTID_WAIT_OUTCOME]: 'caught_up' },
      timed_out: { [SHARD]: shard, [GTID_WAIT_OUTCOME]: 'timed_out' },
    }
  }

  /** Notes the server's version string from a connection's handshake (`…-MariaDB-…` or MySQL's). */
  noteServerVersion(version: unknown): void {
    if (this.system !== undefined || typeof version !== 'string') return
    this.system = /mariadb/i.test(version) ? 'mariadb' : 'mysql'
    this.#operations.clear()
  }

  /** Starts the span of one statement, a child of the active span; end it with the returned op. */
  begin(sql: string): QueryOp {
    return new QueryOp(this, this.operation(classifyStatement(sql).operation))
  }

  /** The span name and attributes of an operation, made on first use. */
  operation(name: string): Operation {
    let operation = this.#operations.get(name)
    if (operation === undefined) {
      const attributes: Attributes = { ...this.#base }
      if (this.system !== undefined) attributes['db.system.name'] = this.system
      if (name !== '') attributes['db.operation.name'] = name
      const target = this.#namespace ?? String(this.#base['server.address'] ?? '')
      operation = {
        spanName: name === '' ? target || 'query' : target === '' ? name : `${name} ${target}`,
        attributes,
        system: this.system,
      }
      this.#operations.set(name, operation)
    }
    return operation
  }

  /** Attributes of a GTID wait's duration, per outcome. */
  waitAttributes(outcome: 'caught_up' | 'timed_out'): Attributes {
    return this.#waitAttributes[outcome]
  }
}

/** The first result set of a read-your-writes read: the wait's outcome and duration (µs). */
interface WaitRow {
  w?: unknown
  t?: unknown
}

/**
 * One statement in flight: its CLIENT span and start time. Ended by the server when the
 * statement settles: records `db.client.operation.duration` (with `error.type` on failure) and,
 * for a read that waited for a GTID, the wait's child span and duration.
 */
export class QueryOp {
  readonly span: Span
  /** `performance.now()` at the start; NaN when nothing records the statement (no SDK). */
  readonly startedAt: number
  /** The statement's first result set is a `MASTER_GTID_WAIT` (see the router's replica reads). */
  gtidWait = false
  readonly #server: ServerTelemetry
  #operation: Operation

  constructor(server: ServerTelemetry, operation: Operation) {
    this.#server = server
    this.#operation = operation
    const instruments = server.instruments
    this.span = instruments.tracer.startSpan(operation.spanName, {
      kind: SpanKind.CLIENT,
      attributes: operation.attributes,
    })
    // With no SDK (the no-op meter, a span that records nothing) the statement reads no clock.
    this.startedAt = instruments.metered || this.span.isRecording() ? performance.now() : Number.NaN
  }

  /** The statement succeeded with `result`. */
  end(result: unknown): void {
    if (Number.isNaN(this.startedAt)) {
      this.span.end()
      return
    }
    const end = performance.now()
    const operation = this.#current()
    if (this.gtidWait) this.#waited(result, end)
    this.#server.instruments.duration.record((end - this.startedAt) / 1000, operation.attributes)
    this.span.end(end)
  }

  /** The statement failed with `error` (as the caller sees it). */
  fail(error: unknown): void {
    if (Number.isNaN(this.startedAt)) {
      this.span.end()
      return
    }
    const end = performance.now()
    const operation = this.#current()
    const type = errorType(error)
    failSpan(this.span, error)
    if (this.gtidWait) this.span.setAttribute(GTID_WAIT_OUTCOME, 'failed')
    this.#server.instruments.duration.record((end - this.startedAt) / 1000, {
      ...operation.attributes,
      'error.type': type,
    })
    this.span.end(end)
  }

  /** The operation with `db.system.name`, once the server's handshake has told it. */
  #current(): Operation {
    const operation = this.#operation
    if (operation.system === this.#server.system) return operation
    const name = operation.attributes['db.operation.name']
    const current = this.#server.operation(typeof name === 'string' ? name : '')
    if (current.system !== undefined) this.span.setAttribute('db.system.name', current.system)
    this.#operation = current
    return current
  }

  /**
   * A read that waited for a GTID: the replica measured the wait itself (`t`, µs between the
   * statement's start and the wait's end), so the wait shows apart from the read it shares a
   * round trip with.
   */
  #waited(result: unknown, end: number): void {
    const row = (Array.isArray(result) ? (result[0] as WaitRow[] | undefined)?.[0] : undefined) as
      | WaitRow
      | undefined
    if (row === undefined) return
    const outcome = row.w !== null && Number(row.w) === 0 ? 'caught_up' : 'timed_out'
    const micros = Number(row.t)
    const waitedMs = Number.isFinite(micros) && micros >= 0 ? micros / 1000 : end - this.startedAt
    const server = this.#server
    server.instruments.gtidWaitDuration.record(waitedMs / 1000, server.waitAttributes(outcome))
    if (!this.span.isRecording()) return
    const child = server.instruments.tracer.startSpan(
      GTID_WAIT_SPAN,
      {
        kind: SpanKind.INTERNAL,
        attributes: { [SHARD]: server.shard, [GTID_WAIT_OUTCOME]: outcome },
        startTime: this.startedAt,
      },
      trace.setSpan(context.active(), this.span),
    )
    child.end(Math.min(end, this.startedAt + waitedMs))
  }
}

/** How a scatter-gather call ended (`ballast.sharding.scatter.outcome`). */
export type ScatterOutcome = 'complete' | 'partial' | 'failed'

const SCATTER_ATTRIBUTES: Record<ScatterOutcome, Attributes> = {
  complete: { [SCATTER_OUTCOME]: 'complete' },
  partial: { [SCATTER_OUTCOME]: 'partial' },
  failed: { [SCATTER_OUTCOME]: 'failed' },
}

/**
 * Runs one scatter-gather call in its INTERNAL span (active while the shards' statements start,
 * so their CLIENT spans are its children) and records `ballast.sharding.scatter.duration` by
 * outcome. `fn` says how the call ended: `failed` shards, and whether that made it `partial`.
 */
export async function tracedScatter<R>(
  instruments: QueryInstruments,
  operation: string,
  shardCount: number,
  fn: () => Promise<{ result: R; failedShards: number }>,
): Promise<R> {
  const startedAt = performance.now()
  const attributes: Attributes = { 'ballast.sharding.shard_count': shardCount }
  if (operation !== '') attributes['db.operation.name'] = operation
  const span = instruments.tracer.startSpan(SCATTER_SPAN, {
    kind: SpanKind.INTERNAL,
    attributes,
    startTime: startedAt,
  })
  let outcome: ScatterOutcome = 'failed'
  try {
    const { result, failedShards } = await context.with(trace.setSpan(context.active(), span), fn)
    outcome = failedShards > 0 ? 'partial' : 'complete'
    if (span.isRecording()) {
      span.setAttribute(SCATTER_OUTCOME, outcome)
      span.setAttribute('ballast.sharding.failed_shards', failedShards)
    }
    return result
  } catch (error) {
    if (span.isRecording()) {
      span.setAttribute(SCATTER_OUTCOME, 'failed')
      const failures = (error as { failures?: unknown }).failures
      if (Array.isArray(failures))
        span.setAttribute('ballast.sharding.failed_shards', failures.length)
    }
    failSpan(span, error)
    throw error
  } finally {
    const end = performance.now()
    instruments.scatterDuration.record((end - startedAt) / 1000, SCATTER_ATTRIBUTES[outcome])
    span.end(end)
  }
}

/**
 * Runs a transaction in its INTERNAL span (`ballast.sharding.transaction`, active while it
 * runs, so its statements' CLIENT spans are its children), with the shard and how it ended:
 * `committed`, or `rolled_back` with `error.type` and status ERROR.
 */
export async function tracedTransaction<R>(
  instruments: QueryInstruments,
  shard: string,
  fn: () => Promise<R>,
): Promise<R> {
  const span = instruments.tracer.startSpan(TRANSACTION_SPAN, {
    kind: SpanKind.INTERNAL,
    attributes: { [SHARD]: shard, [ROLE]: 'primary' },
  })
  try {
    const result = await context.with(trace.setSpan(context.active(), span), fn)
    if (span.isRecording()) span.setAttribute(TRANSACTION_OUTCOME, 'committed')
    return result
  } catch (error) {
    if (span.isRecording()) span.setAttribute(TRANSACTION_OUTCOME, 'rolled_back')
    failSpan(span, error)
    throw error
  } finally {
    span.end()
  }
}
