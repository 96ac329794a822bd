import { merge } from '@ballast/shared'
import type { Delivery, MessageHandler } from './consumer.js'
import { InvalidArgumentError } from './errors.js'
import { checkMessageId } from './internal/messageId.js'
import {
  quoteTable,
  type SqlConnection,
  type SqlPool,
  type SqlPoolConnection,
} from './internal/sql.js'
import { brief, check } from './internal/validate.js'

/** Options of {@link createInbox}. */
export interface InboxOptions {
  /** The mysql2 promise pool the handler's transaction runs on. */
  pool: SqlPool
  /**
   * Table of handled message ids.
   * @default 'mq_inbox'
   */
  table?: string
  /** The consumer's name: one message may be handled once by each consumer name. */
  consumer: string
}

/** MySQL's and MariaDB's error number of a duplicate key (`ER_DUP_ENTRY`). */
const ER_DUP_ENTRY = 1062

/** The defaults of {@link InboxOptions}. */
export const DEFAULT_INBOX_OPTIONS: Readonly<Required<Pick<InboxOptions, 'table'>>> = Object.freeze(
  { table: 'mq_inbox' },
)

/** A handler that runs inside the inbox's MySQL transaction. */
export type InboxHandler<T = unknown> = (
  delivery: Delivery<T>,
  connection: SqlPoolConnection,
) => Promise<void>

/** Counters of an inbox. */
export interface InboxStats {
  /** Deliveries handled and committed. */
  handled: number
  /** Deliveries dropped because their message id was committed before. */
  duplicates: number
}

/** Effectively-once handling through an inbox table in the handler's own transaction. */
export interface Inbox {
  /** The inbox table's name. */
  readonly table: string
  /**
   * Wraps a handler: record the message id and run the handler in one transaction; a duplicate is
   * dropped. Ids are compared byte for byte; a missing, empty, over-255-byte or ill-formed id is an
   * {@link InvalidMessageIdError} (the consumer dead-letters the message).
   */
  handler<T = unknown>(handler: InboxHandler<T>): MessageHandler<T>
  /**
   * Creates the inbox table if it does not exist (`message_id VARBINARY(255)`: byte for byte; see
   * the README to migrate a table made by an earlier version).
   */
  createTable(connection: SqlConnection): Promise<void>
  /** Counters. */
  stats(): InboxStats
}

/**
 * Creates an inbox on MySQL/MariaDB: each delivery's message id is inserted into the inbox table
 * in the same transaction as the handler's own writes. If the id is there already (committed by
 * an earlier delivery) the delivery is acked and dropped; if the handler fails or the process dies,
 * the transaction rolls back and the redelivery runs it again. The database changes of a message
 * happen once, however often it is delivered.
 *
 * @example
 * ```ts
 * const inbox = createInbox({ pool, consumer: 'billing' })
 * await inbox.createTable(pool)
 * await broker.consume('billing', inbox.handler(async (m, conn) => {
 *   await conn.query('INSERT INTO invoices (order_id) VALUES (?)', [m.body.orderId])
 * }))
 * ```
 */
export function createInbox(options: InboxOptions): Inbox {
  if (typeof options?.pool?.getConnection !== 'function') {
    throw new InvalidArgumentError(
      `invalid option "pool": expected a mysql2 promise pool, got ${brief(options?.pool)}`,
    )
  }
  if (
    typeof options.consumer !== 'string' ||
    options.consumer.length === 0 ||
    options.consumer.length > 191
  ) {
    check.invalid('consumer', 'a name of 1-191 characters', options.consumer)
  }
  const settings = merge(DEFAULT_INBOX_OPTIONS, options)
  const table = quoteTable('table', settings.table)
  const { pool, consumer } = settings
  const counters: InboxStats = { handled: 0, duplicates: 0 }
  return {
    table: settings.table,
    stats: () => ({ ...counters }),
    async createTable(connection) {
      await connection.query(
        `CREATE TABLE IF NOT EXISTS ${table} (
          consumer VARCHAR(191) NOT NULL,
          message_id VARBINARY(255) NOT NULL,
          handled_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
          PRIMARY KEY (consumer, message_id)
        ) ENGINE=InnoDB`,
      )
    },
    handler<T>(handler: InboxHandler<T>): MessageHandler<T> {
      return async (delivery) => {
        const id = checkMessageId(delivery.messageId)
        const connection = await pool.getConnection()
        let committed = false
        try {
          await connection.beginTransaction()
          // plain INSERT: IGNORE would also turn a foreign key, truncation or conversion error
          // into "0 rows", read as a duplicate; only ER_DUP_ENTRY is one
          const duplicate = await connection
            // the id's UTF-8 bytes, not text: a connection in another character set (latin1)
            // would convert it, and "order-ж" would land as "order-6"
            .query(`INSERT INTO ${table} (consumer, message_id) VALUES (?, ?)`, [
              consumer,
              Buffer.from(id, 'utf8'),
            ])
            .then(
              () => false,
              (error: unknown) => {
                if ((error as { errno?: unknown })?.errno === ER_DUP_ENTRY) return true
                throw error
              },
            )
          if (duplicate) {
            await connection.commit()
            committed = true
            counters.duplicates++
            return
          }
          await handler(delivery, connection)
          await connection.commit()
          committed = true
          counters.handled++
        } finally {
          if (!committed) await connection.rollback().catch(() => {})
          connection.release()
        }
      }
    },
  }
}
