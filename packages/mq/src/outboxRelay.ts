import { setTimeout as sleep } from 'node:timers/promises'
import {
  type Duration,
  Emitter,
  extractContext,
  merge,
  observe,
  type TelemetryOptions,
  type Unsubscribe,
} from '@ballast/shared'
import { type Attributes, type BatchObservableResult, ROOT_CONTEXT } from '@opentelemetry/api'
import { Broker, publishEncodedOf } from './broker.js'
import {
  InvalidArgumentError,
  InvalidMessageError,
  isMqError,
  MqClosedError,
  OutboxPublishTimeoutError,
} from './errors.js'
import { quoteTable, type SqlPool, type SqlPoolConnection } from './internal/sql.js'
import { mqTelemetry } from './internal/telemetry.js'
import { brief, check } from './internal/validate.js'
import type { Outbox } from './outbox.js'

/** Whether a row's publish failed because of the row itself (the publish check), so no retry can help. */
function unpublishable(error: unknown): boolean {
  if (!isMqError(error)) return false
  return (
    error.code === 'E_MQ_INVALID_MESSAGE' ||
    error.code === 'E_MQ_MESSAGE_TOO_LARGE' ||
    error.code === 'E_MQ_INVALID_ARGUMENT'
  )
}

/**
 * Options of {@link createOutboxRelay}. `meterProvider` (from the shared `TelemetryOptions`) gets
 * the relay's counters and the outbox backlog; the publish spans are the broker's (its
 * `tracerProvider`), each continuing the trace stored with its row.
 */
export interface OutboxRelayOptions extends TelemetryOptions {
  /** The mysql2 promise pool holding the outbox table. */
  pool: SqlPool
  /** Where to publish. */
  broker: Broker
  /** The outbox whose table is relayed. */
  outbox: Outbox
  /**
   * Rows claimed and published per transaction.
   * @default 200
   */
  batchSize?: number
  /**
   * Wait between polls when the outbox is empty.
   * @default 200
   */
  pollInterval?: Duration
  /**
   * A row that failed this many times (unroutable, nacked) is left for an operator, with `last_error` set.
   * A row no publish can take (the publish check refuses it, or its headers are not JSON) fails with
   * {@link InvalidMessageError} (or {@link InvalidArgumentError}) and is left at once: its `attempts` jump to this.
   * @default 10
   */
  maxAttempts?: number
  /**
   * How long a batch may wait for the broker's confirms. Past it the batch's transaction is
   * rolled back (its rows stay unsent, unlocked, with no attempt counted), a `relay-failed` event
   * carries an {@link OutboxPublishTimeoutError}, and the relay backs off and tries again. Without
   * it, a broker blocked by a memory or disk alarm would keep the batch's row locks and its
   * transaction open for as long as the alarm lasts.
   * @default 30_000
   */
  publishTimeout?: Duration
  /**
   * Start polling at once.
   * @default true
   */
  autoStart?: boolean
  /**
   * The relay's name in telemetry (the `ballast.mq.outbox` attribute of its instruments). Give
   * each relay of a process its own when several relay tables of the same name (one per shard
   * or database): with one name they would report as one series, each reading overwriting the
   * other's.
   * @default the outbox's table name
   */
  name?: string
}

/** The defaults of {@link OutboxRelayOptions}. */
export const DEFAULT_OUTBOX_RELAY_OPTIONS: Readonly<
  Required<Omit<OutboxRelayOptions, 'pool' | 'broker' | 'outbox' | 'name' | keyof TelemetryOptions>>
> = Object.freeze({
  batchSize: 200,
  pollInterval: 200,
  maxAttempts: 10,
  publishTimeout: 30_000,
  autoStart: true,
})

/** Counters of a relay. */
export interface OutboxRelayStats {
  /** Rows published, confirmed and marked sent. */
  sent: number
  /** Row publishes that failed (the row stays, with `attempts` + 1). */
  failed: number
  /** Rows held back because an earlier row of their aggregate was not sent yet. */
  deferred: number
  /** Transactions run (polls that found rows). */
  batches: number
}

/** Events of an {@link OutboxRelay}. */
export interface OutboxRelayEvents {
  /** A batch was published and marked sent. */
  'batch-relayed': BatchRelayedEvent
  /** Publishing a row failed; it stays in the outbox. */
  'row-failed': RowFailedEvent
  /** A poll failed (database or broker down); the relay waits and tries again. */
  'relay-failed': RelayFailedEvent
}

/** Payload of the relay's `batch-relayed` event. */
export interface BatchRelayedEvent {
  /** Rows of the batch published, confirmed and marked sent. */
  sent: number
  /** Rows of the batch whose publish failed (they stay, with `attempts` + 1). */
  failed: number
  /** Rows held back because an earlier row of their aggregate is unsent. */
  deferred: number
}

/** Payload of the relay's `row-failed` event. */
export interface RowFailedEvent {
  /** The row's id in the outbox table. */
  id: number
  /** The message id of the row. */
  messageId: string
  /** Why the publish failed. */
  error: Error
}

/** Payload of the relay's `relay-failed` event. */
export interface RelayFailedEvent {
  /** What failed (database or broker), such as an {@link OutboxPublishTimeoutError}. */
  error: Error
}

/** The relay's counters as observable instruments (read from `stats()` at collection time). */
const RELAY_INSTRUMENTS = {
  'ballast.mq.outbox.sent': {
    kind: 'counter',
    description: 'Outbox rows published, confirmed and marked sent',
    unit: '{row}',
  },
  'ballast.mq.outbox.failed': {
    kind: 'counter',
    description: 'Outbox row publishes that failed (the row stays, with attempts + 1)',
    unit: '{row}',
  },
  'ballast.mq.outbox.deferred': {
    kind: 'counter',
    description: 'Outbox rows held back because an earlier row of their aggregate was not sent yet',
    unit: '{row}',
  },
  'ballast.mq.outbox.batches': {
    kind: 'counter',
    description: 'Relay transactions run (polls that found rows)',
    unit: '{batch}',
  },
} as const

/** How long one reading of the backlog may take before a collection goes on without it. */
const BACKLOG_QUERY_TIMEOUT_MS = 5000

/** A thrown value as an `Error` (a driver may throw anything), for an event payload. */
function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value), { cause: value })
}

/** Moves committed outbox rows to the broker. Made by {@link createOutboxRelay}. */
export interface OutboxRelay {
  /** Starts polling (if `autoStart` was false). */
  start(): void
  /** Claims, publishes and marks one batch; resolves to the rows sent. */
  runOnce(): Promise<number>
  /** Counters. */
  stats(): OutboxRelayStats
  /**
   * Subscribes to an event; returns a function that unsubscribes. A listener that throws does not
   * break the relay: its error is rethrown in a microtask (an `uncaughtException`).
   */
  on<K extends keyof OutboxRelayEvents & string>(
    event: K,
    listener: (payload: OutboxRelayEvents[K]) => void,
  ): Unsubscribe
  /** Subscribes to the next occurrence of an event; returns a function that unsubscribes. */
  once<K extends keyof OutboxRelayEvents & string>(
    event: K,
    listener: (payload: OutboxRelayEvents[K]) => void,
  ): Unsubscribe
  /** Unsubscribes a listener added with `on()` or `once()`. */
  off<K extends keyof OutboxRelayEvents & string>(
    event: K,
    listener: (payload: OutboxRelayEvents[K]) => void,
  ): void
  /**
   * Stops polling after the batch in hand. Afterwards `start()` throws and `runOnce()` rejects
   * with {@link MqClosedError}.
   */
  close(): Promise<void>
}

interface Row {
  id: number | string
  message_id: string
  aggregate_id: string | null
  exchange: string
  routing_key: string
  content: Buffer
  content_type: string
  type: string | null
  headers: string | null
}

/**
 * Creates an outbox relay: each batch claims unsent rows with `SELECT ... FOR UPDATE SKIP LOCKED`
 * (so several relays share the work without publishing a row twice), publishes them with
 * confirms, marks them sent and commits. A relay that dies before the commit leaves its rows to
 * the next one: they are published again, and idempotent consumers drop the duplicates. Rows of
 * one aggregate go out in order; a row waits while an earlier row of its aggregate is unsent.
 *
 * @example
 * ```ts
 * const relay = createOutboxRelay({ pool, broker, outbox, batchSize: 200 })
 * relay.on('relay-failed', ({ error }) => log.warn(error))
 * // on shutdown
 * await relay.close()
 * ```
 */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  if (typeof options?.pool?.getConnection !== 'function') {
    throw new InvalidArgumentError(
      `invalid option "pool": expected a mysql2 promise pool, got ${brief(options?.pool)}`,
    )
  }
  if (!(options.broker instanceof Broker)) {
    throw new InvalidArgumentError(
      `invalid option "broker": expected a Broker from createBroker(), got ${brief(options.broker)}`,
    )
  }
  if (typeof options.outbox?.table !== 'string') {
    throw new InvalidArgumentError(
      `invalid option "outbox": expected an Outbox from createOutbox(), got ${brief(options.outbox)}`,
    )
  }
  const settings = merge(DEFAULT_OUTBOX_RELAY_OPTIONS, options)
  const table = quoteTable('outbox.table', settings.outbox.table)
  const batchSize = check.positiveInteger('batchSize', settings.batchSize)
  const pollMs = check.duration('pollInterval', settings.pollInterval)
  const maxAttempts = check.positiveInteger('maxAttempts', settings.maxAttempts)
  const publishTimeoutMs = check.duration('publishTimeout', settings.publishTimeout, {
    positive: true,
  })
  const autoStart = check.boolean('autoStart', settings.autoStart)
  const name =
    settings.name === undefined ? settings.outbox.table : check.string('name', settings.name)
  const { pool } = settings
  const publishEncoded = publishEncodedOf(options.broker)
  const events = new Emitter<OutboxRelayEvents>()
  const counters: OutboxRelayStats = { sent: 0, failed: 0, deferred: 0, batches: 0 }
  let running = false
  let closed = false
  let loop: Promise<void> | undefined
  const abort = new AbortController()
  const stopTelemetry = instrument(options, pool, table, name, () => ({
    ...counters,
  }))

  async function claim(connection: SqlPoolConnection): Promise<number> {
    const [rows] = (await connection.query(
      `SELECT id, message_id, aggregate_id, exchange, routing_key, content, content_type, type, headers FROM ${table} WHERE sent_at IS NULL AND attempts < ? ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED`,
      [maxAttempts, batchSize],
    )) as [Row[], unknown]
    if (rows.length === 0) return 0
    counters.batches++
    // Per aggregate, publish only while our rows are exactly the aggregate's next unsent rows.
    const aggregates = [
      ...new Set(rows.flatMap((r) => (r.aggregate_id === null ? [] : [r.aggregate_id]))),
    ]
    const allowed = new Set<string>()
    if (aggregates.length > 0) {
      const ours = new Set(rows.map((r) => String(r.id)))
      const maxId = rows[rows.length - 1]?.id
      const [pending] = (await connection.query(
        `SELECT id, aggregate_id FROM ${table} WHERE sent_at IS NULL AND aggregate_id IN (?) AND id <= ? ORDER BY id`,
        [aggregates, maxId],
      )) as [Array<{ id: number | string; aggregate_id: string }>, unknown]
      const blocked = new Set<string>()
      for (const p of pending) {
        if (blocked.has(p.aggregate_id)) continue
        if (ours.has(String(p.id))) allowed.add(String(p.id))
        else blocked.add(p.aggregate_id)
      }
    }
    const publishable = rows.filter((r) => r.aggregate_id === null || allowed.has(String(r.id)))
    const deferred = rows.length - publishable.length
    counters.deferred += deferred
    const results = await confirmedWithin(publishable.map(publishRow))
    const sent: Array<number | string> = []
    let failed = 0
    for (const [i, result] of results.entries()) {
      const row = publishable[i] as Row
      if (result.status === 'fulfilled') sent.push(row.id)
      else {
        failed++
        events.emit('row-failed', {
          id: Number(row.id),
          messageId: row.message_id,
          error: asError(result.reason),
        })
        // a row no publish can take (the publish check, headers that are not JSON) is left for an
        // operator at once: attempts jump to maxAttempts instead of failing the same way each poll
        const floor = unpublishable(result.reason) ? maxAttempts : 0
        await connection.query(
          `UPDATE ${table} SET attempts = GREATEST(attempts + 1, ?), last_error = ? WHERE id = ?`,
          [
            floor,
            String((result.reason as Error)?.message ?? result.reason).slice(0, 1000),
            row.id,
          ],
        )
      }
    }
    if (sent.length > 0) {
      await connection.query(`UPDATE ${table} SET sent_at = CURRENT_TIMESTAMP(3) WHERE id IN (?)`, [
        sent,
      ])
    }
    counters.sent += sent.length
    counters.failed += failed
    events.emit('batch-relayed', { sent: sent.length, failed, deferred })
    return sent.length
  }

  /** Publishes one claimed row; a row that cannot even be read as a message rejects alone. */
  function publishRow(r: Row): Promise<void> {
    const publishOptions: Record<string, unknown> = {
      messageId: r.message_id,
      contentType: r.content_type,
    }
    if (r.type !== null) publishOptions.type = r.type
    if (r.headers !== null) {
      // written by enqueue as JSON, but the table is the caller's: one bad row must not throw the
      // whole batch (it would come first in every batch, and the relay would never move again)
      let headers: unknown
      try {
        headers = JSON.parse(r.headers)
      } catch (error) {
        return Promise.reject(
          new InvalidMessageError(
            `outbox row ${r.id}: its headers are not JSON: ${(error as Error).message}`,
            [],
            { cause: error },
          ),
        )
      }
      publishOptions.headers = headers
    }
    // under the context stored with the row by enqueue (none in rows written before it did, or
    // without an SDK): the publish span, and the consumers after it, continue that trace
    const parent = extractContext(
      publishOptions.headers as Record<string, unknown> | undefined,
      ROOT_CONTEXT,
    )
    return publishEncoded(r.exchange, r.routing_key, r.content, publishOptions, parent)
  }

  // The publishes of a batch that timed out: still waiting in the broker's buffer or for their
  // confirms. The next batch is not claimed before they settle, so a long broker alarm does not
  // pile up copies of the same rows in the buffer, and no transaction stays open meanwhile.
  let unsettled: { done: Promise<unknown>; rows: number } | undefined

  /** Resolves with `work` or rejects with {@link OutboxPublishTimeoutError} after `publishTimeout`. */
  async function within<T>(work: Promise<T>, rows: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new OutboxPublishTimeoutError(rows, publishTimeoutMs)),
        publishTimeoutMs,
      )
    })
    try {
      return await Promise.race([work, late])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Settles every publish, or throws {@link OutboxPublishTimeoutError} (the caller rolls back). */
  async function confirmedWithin(
    publishes: Promise<void>[],
  ): Promise<PromiseSettledResult<void>[]> {
    const all = Promise.allSettled(publishes)
    try {
      return await within(all, publishes.length)
    } catch (error) {
      unsettled = { done: all, rows: publishes.length }
      throw error
    }
  }

  async function runOnce(): Promise<number> {
    if (unsettled !== undefined) {
      await within(unsettled.done, unsettled.rows)
      unsettled = undefined
    }
    const connection = await pool.getConnection()
    let done = false
    try {
      await connection.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
      await connection.beginTransaction()
      const sent = await claim(connection)
      await connection.commit()
      done = true
      return sent
    } finally {
      if (!done) await connection.rollback().catch(() => {})
      connection.release()
    }
  }

  async function run(): Promise<void> {
    let backoff = pollMs
    while (!closed) {
      try {
        const sent = await runOnce()
        backoff = pollMs
        if (sent > 0) continue
        await sleep(pollMs, undefined, { signal: abort.signal })
      } catch (error) {
        if (closed) return
        events.emit('relay-failed', { error: asError(error) })
        backoff = Math.min(Math.max(backoff * 2, 100), 5000)
        await sleep(backoff, undefined, { signal: abort.signal }).catch(() => {})
      }
    }
  }

  const relay: OutboxRelay = {
    start() {
      if (closed) throw new MqClosedError('outbox relay', 'start')
      if (running) return
      running = true
      loop = run().catch(() => {})
    },
    runOnce: () =>
      closed ? Promise.reject(new MqClosedError('outbox relay', 'runOnce')) : runOnce(),
    stats: () => ({ ...counters }),
    on: (event, listener) => events.on(event, listener),
    once: (event, listener) => events.once(event, listener),
    off: (event, listener) => events.off(event, listener),
    async close() {
      if (!closed) stopTelemetry()
      closed = true
      abort.abort()
      await loop
    },
  }
  if (autoStart) relay.start()
  return relay
}

/**
 * Registers the relay's instruments: its counters, and the outbox backlog (rows not sent yet) and
 * the age of the oldest one, read with one indexed query only when the metrics SDK collects (no
 * SDK, no query). Returns the function that unregisters them.
 */
function instrument(
  options: TelemetryOptions,
  pool: SqlPool,
  table: string,
  name: string,
  stats: () => OutboxRelayStats,
): () => void {
  const { meter } = mqTelemetry(options)
  const attributes: Attributes = { 'ballast.mq.outbox': name }
  const stopCounters = observe(meter, RELAY_INSTRUMENTS, (record) => {
    const counters = stats()
    record('ballast.mq.outbox.sent', counters.sent, attributes)
    record('ballast.mq.outbox.failed', counters.failed, attributes)
    record('ballast.mq.outbox.deferred', counters.deferred, attributes)
    record('ballast.mq.outbox.batches', counters.batches, attributes)
  })
  const backlog = meter.createObservableGauge('ballast.mq.outbox.backlog', {
    description: 'Outbox rows not sent yet (including rows left for an operator after maxAttempts)',
    unit: '{row}',
  })
  const oldest = meter.createObservableGauge('ballast.mq.outbox.oldest_age', {
    description:
      'Age of the oldest outbox row not sent yet (0 when there is none), by the database clock',
    unit: 's',
  })
  const read = async (result: BatchObservableResult) => {
    const reading = await readBacklog(pool, table).catch(() => undefined)
    if (reading === undefined) return // the database is down: this collection has no point
    result.observe(backlog, reading.rows, attributes)
    result.observe(oldest, reading.ageSeconds, attributes)
  }
  meter.addBatchObservableCallback(read, [backlog, oldest])
  return () => {
    stopCounters()
    meter.removeBatchObservableCallback(read, [backlog, oldest])
  }
}

/** The rows not sent yet and the age of the oldest, in one query on the `pending` index, bounded in time. */
async function readBacklog(
  pool: SqlPool,
  table: string,
): Promise<{ rows: number; ageSeconds: number }> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('backlog query timed out')), BACKLOG_QUERY_TIMEOUT_MS)
    timer.unref()
  })
  const query = (async () => {
    const connection = await pool.getConnection()
    try {
      const [rows] = (await connection.query(
        `SELECT COUNT(*) AS backlog, TIMESTAMPDIFF(MICROSECOND, MIN(created_at), CURRENT_TIMESTAMP(3)) AS age FROM ${table} WHERE sent_at IS NULL`,
      )) as [Array<{ backlog: number | string; age: number | string | null }>, unknown]
      const row = rows[0]
      return {
        rows: Number(row?.backlog ?? 0),
        ageSeconds:
          row?.age === null || row?.age === undefined ? 0 : Math.max(0, Number(row.age) / 1e6),
      }
    } finally {
      connection.release()
    }
  })()
  try {
    return await Promise.race([query, late])
  } finally {
    clearTimeout(timer)
  }
}
