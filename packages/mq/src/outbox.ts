import { randomUUID } from 'node:crypto'
import { merge, type TelemetryOptions } from '@ballast/shared'
import { context, SpanKind } from '@opentelemetry/api'
import type { Options } from 'amqplib'
import { InvalidArgumentError, InvalidMessageError } from './errors.js'
import { checkPublish, encodeMessage } from './internal/encode.js'
import { quoteTable, type SqlConnection } from './internal/sql.js'
import {
  contextWith,
  destinationOf,
  failSpan,
  MESSAGING_SYSTEM,
  mqTelemetry,
  withContext,
} from './internal/telemetry.js'
import { brief, check } from './internal/validate.js'

export type { SqlConnection, SqlPool, SqlPoolConnection } from './internal/sql.js'

/** The outbox's `message_id VARCHAR(128)`: a longer id would be cut (or refused) by the database. */
const MAX_OUTBOX_MESSAGE_ID = 128

/**
 * Options of {@link createOutbox}. `tracerProvider` (from the shared `TelemetryOptions`) gives the
 * `create <exchange>` span of each `enqueue`; the outbox keeps no counters, so `meterProvider` is
 * not used (the relay reports the backlog).
 */
export interface OutboxOptions extends TelemetryOptions {
  /**
   * Table holding the messages to send.
   * @default 'mq_outbox'
   */
  table?: string
  /**
   * Largest body accepted by `enqueue`, in bytes (keep it at or below the broker's `maxMessageBytes`).
   * @default 4_194_304 (4 MiB)
   */
  maxMessageBytes?: number
}

/** The defaults of {@link OutboxOptions}. */
export const DEFAULT_OUTBOX_OPTIONS: Readonly<
  Required<Omit<OutboxOptions, keyof TelemetryOptions>>
> = Object.freeze({
  table: 'mq_outbox',
  maxMessageBytes: 4 * 1024 * 1024,
})

/** Per-message options of {@link Outbox.enqueue}. */
export interface EnqueueOptions {
  /**
   * Message id (consumers deduplicate by it; the relay sends it unchanged every time); at most 128
   * characters (the outbox column) and 255 UTF-8 bytes, or `enqueue` rejects with {@link InvalidMessageError}.
   * @default a random UUID
   */
  messageId?: string
  /**
   * Messages with the same aggregate id are published in the order they were enqueued.
   * @default undefined (no ordering constraint)
   */
  aggregateId?: string
  /**
   * Application headers. The trace context of the `enqueue` (W3C `traceparent`/`tracestate`, when an
   * OpenTelemetry SDK is installed) is added to them in the row, so the relay publishes the message
   * in the trace of the request that wrote it.
   * @default {}
   */
  headers?: Record<string, unknown>
  /**
   * AMQP `type` property (set from the definition for typed messages).
   * @default undefined
   */
  type?: string
}

/**
 * The defaults of {@link EnqueueOptions}: none is a fixed value (each message gets a random UUID,
 * no aggregate, no headers, and the type of its definition), so it is empty; it exists so that
 * every options type has its defaults in one place.
 */
export const DEFAULT_ENQUEUE_OPTIONS: Readonly<EnqueueOptions> = Object.freeze({})

/** A transactional outbox: messages written in the caller's transaction, sent later by a relay. */
export interface Outbox {
  /** The outbox table's name. */
  readonly table: string
  /**
   * Writes a message into the outbox on `connection`, inside the caller's transaction: it is sent
   * (by {@link createOutboxRelay}) if and only if that transaction commits. Resolves to the message id.
   * @throws {@link MessageTooLargeError}, {@link InvalidMessageError} (also for what the relay's publish
   * would refuse: an id, type or header table over its limit), {@link InvalidArgumentError} (an exchange or
   * routing key over 255 bytes): nothing was written.
   */
  enqueue(
    connection: SqlConnection,
    exchange: string,
    routingKey: string,
    message: unknown,
    options?: EnqueueOptions,
  ): Promise<string>
  /** Creates the outbox table if it does not exist (InnoDB; MySQL 8+ or MariaDB 10.6+ for SKIP LOCKED). */
  createTable(connection: SqlConnection): Promise<void>
}

/**
 * Creates a transactional outbox on MySQL/MariaDB (mysql2): `enqueue` writes the message in the
 * same transaction as the business change, so a message is published exactly when the change
 * commits, never for a rolled-back one, and never lost to a crash between the two.
 *
 * @example
 * ```ts
 * const outbox = createOutbox({ table: 'mq_outbox' })
 * await outbox.createTable(pool)
 * const conn = await pool.getConnection()
 * await conn.beginTransaction()
 * await conn.query('UPDATE orders SET status = ? WHERE id = ?', ['placed', 'o-1'])
 * await outbox.enqueue(conn, 'orders', 'order.placed', { orderId: 'o-1' }, { aggregateId: 'o-1' })
 * await conn.commit()
 * conn.release()
 * ```
 */
export function createOutbox(options: OutboxOptions = {}): Outbox {
  if (options !== undefined) check.object('options', options)
  const settings = merge(DEFAULT_OUTBOX_OPTIONS, options)
  const table = quoteTable('table', settings.table)
  const maxBytes = check.positiveInteger('maxMessageBytes', settings.maxMessageBytes)
  const { tracer } = mqTelemetry(options)
  return {
    table: settings.table,
    async enqueue(connection, exchange, routingKey, message, enqueueOptions = {}) {
      if (typeof exchange !== 'string') {
        throw new InvalidArgumentError(
          `invalid argument "exchange": expected a string, got ${brief(exchange)}`,
        )
      }
      if (typeof routingKey !== 'string' || Buffer.byteLength(routingKey) > 255) {
        throw new InvalidArgumentError(
          `invalid argument "routingKey": expected a string of at most 255 bytes`,
        )
      }
      const encoded = await encodeMessage(
        message,
        maxBytes,
        enqueueOptions.type,
        enqueueOptions.headers,
      )
      const messageId = enqueueOptions.messageId ?? randomUUID()
      if (typeof messageId !== 'string' || messageId.length > MAX_OUTBOX_MESSAGE_ID) {
        throw new InvalidMessageError(
          `invalid "messageId": expected a string of at most ${MAX_OUTBOX_MESSAGE_ID} characters (the outbox column), got ${typeof messageId === 'string' ? `${messageId.length} characters` : typeof messageId}`,
        )
      }
      // what the relay's publish would refuse (exchange, ids, type over 255 bytes) is refused now,
      // in the caller's transaction, instead of failing on every relay poll later
      const publishOptions: Options.Publish = { messageId, contentType: encoded.contentType }
      if (encoded.type !== undefined) publishOptions.type = encoded.type
      checkPublish(exchange, routingKey, publishOptions)
      // the message is created now, in the caller's trace; the row keeps this span's context in
      // its headers, and the relay's publish continues it (the "outbox gap" closed)
      const destination = destinationOf(exchange, routingKey)
      const parent = context.active()
      const span = tracer.startSpan(
        `create ${destination}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            'messaging.system': MESSAGING_SYSTEM,
            'messaging.operation.name': 'create',
            'messaging.operation.type': 'create',
            'messaging.destination.name': destination,
            'messaging.rabbitmq.destination.routing_key': routingKey,
            'messaging.message.id': messageId,
            'messaging.message.body.size': encoded.content.length,
            'ballast.mq.outbox': settings.table,
          },
        },
        parent,
      )
      const headers = withContext(encoded.headers, contextWith(parent, span))
      try {
        await connection.query(
          `INSERT INTO ${table} (message_id, aggregate_id, exchange, routing_key, content, content_type, type, headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
          [
            messageId,
            enqueueOptions.aggregateId ?? null,
            exchange,
            routingKey,
            encoded.content,
            encoded.contentType,
            encoded.type ?? null,
            headers === undefined ? null : JSON.stringify(headers),
          ],
        )
      } catch (error) {
        failSpan(span, error)
        throw error
      } finally {
        span.end()
      }
      return messageId
    },
    async createTable(connection) {
      await connection.query(
        `CREATE TABLE IF NOT EXISTS ${table} (
          id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
          message_id VARCHAR(128) NOT NULL,
          aggregate_id VARCHAR(191) NULL,
          exchange VARCHAR(255) NOT NULL,
          routing_key VARCHAR(255) NOT NULL,
          content LONGBLOB NOT NULL,
          content_type VARCHAR(100) NOT NULL,
          type VARCHAR(255) NULL,
          headers LONGTEXT NULL,
          created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
          sent_at DATETIME(3) NULL,
          attempts INT NOT NULL DEFAULT 0,
          last_error VARCHAR(1000) NULL,
          KEY pending (sent_at, id),
          KEY aggregate_pending (aggregate_id, sent_at, id)
        ) ENGINE=InnoDB`,
      )
    },
  }
}
