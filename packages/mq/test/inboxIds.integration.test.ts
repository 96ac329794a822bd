import { mysqlUrl, uniqueName } from '@ballast/testkit'
import fc from 'fast-check'
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createInbox, type Delivery, InvalidMessageIdError, isMqError } from '../src/index.js'
import { closeAll } from './support/bounded.js'

let pool: mysql.Pool
const tables: string[] = []

beforeAll(async () => {
  pool = mysql.createPool({ uri: await mysqlUrl(), connectionLimit: 4 })
})
afterAll(async () => {
  for (const t of tables.reverse())
    await closeAll([() => pool.query(`DROP TABLE IF EXISTS \`${t}\``)])
  await closeAll([() => pool.end()])
}, 30_000)

/** A delivery as the consumer hands it over, with only the fields the inbox reads. */
function delivery(messageId: string | undefined): Delivery {
  return { messageId, body: {}, headers: {} } as unknown as Delivery
}

async function inboxTable(label: string) {
  const table = uniqueName(label)
  tables.push(table)
  return table
}

describe('Inbox message ids', () => {
  it('handles ids that differ only in case, trailing spaces or after the 128th character as distinct messages, and still drops a true duplicate', async () => {
    const table = await inboxTable('inbox_ids')
    const inbox = createInbox({ pool, table, consumer: 'billing' })
    await inbox.createTable(pool)
    const ran: string[] = []
    const handle = inbox.handler(async (m) => {
      ran.push(m.messageId as string)
    })
    const shared = 'p'.repeat(128)
    const ids = ['Order-7', 'order-7', 'x', 'x ', `${shared}-a`, `${shared}-b`, 'é', 'e']
    for (const id of ids) await handle(delivery(id))
    await handle(delivery('Order-7'))
    expect(ran).toEqual(ids)
    expect(inbox.stats()).toEqual({ handled: ids.length, duplicates: 1 })
  })

  it('keeps ids distinct whatever the pool\'s character set: on a latin1 pool, "order-ж" and "order-6" are two messages', async () => {
    const table = await inboxTable('inbox_charset')
    const latin1 = mysql.createPool({
      uri: await mysqlUrl(),
      connectionLimit: 1,
      charset: 'latin1',
    })
    try {
      const inbox = createInbox({ pool: latin1, table, consumer: 'billing' })
      await inbox.createTable(latin1)
      const ran: string[] = []
      const handle = inbox.handler(async (m) => {
        ran.push(m.messageId as string)
      })
      // sent as text, a latin1 connection keeps the low byte of each character: "ж" (U+0436) is "6"
      for (const id of ['order-ж', 'order-6', '注文-1', '注文-2']) await handle(delivery(id))
      await handle(delivery('order-ж'))
      expect(ran).toEqual(['order-ж', 'order-6', '注文-1', '注文-2'])
      expect(inbox.stats()).toEqual({ handled: 4, duplicates: 1 })
      // the same bytes as a utf8mb4 pool writes, so a table shared by both pools agrees
      const [rows] = (await pool.query(
        `SELECT HEX(message_id) AS hex FROM \`${table}\` ORDER BY handled_at, message_id`,
      )) as [Array<{ hex: string }>, unknown]
      expect(rows.map((r) => r.hex).sort()).toEqual(
        ['order-ж', 'order-6', '注文-1', '注文-2']
          .map((id) => Buffer.from(id).toString('hex').toUpperCase())
          .sort(),
      )
    } finally {
      await closeAll([() => latin1.end()])
    }
  })

  it('refuses an id over 255 bytes, an empty, missing or ill-formed id with InvalidMessageIdError (dead-lettered, not retried), running nothing', async () => {
    const table = await inboxTable('inbox_refuse')
    const inbox = createInbox({ pool, table, consumer: 'billing' })
    await inbox.createTable(pool)
    let ran = 0
    const handle = inbox.handler(async () => {
      ran++
    })
    for (const id of [
      'a'.repeat(256),
      'é'.repeat(128),
      '',
      undefined,
      'lone \uD800',
      'bad \uFFFD',
    ]) {
      const error = await Promise.resolve(handle(delivery(id))).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(InvalidMessageIdError)
      expect(isMqError(error) && error.code).toBe('E_MQ_INVALID_MESSAGE_ID')
      expect(isMqError(error) && error.retryable).toBe(false)
    }
    expect(ran).toBe(0)
    // the largest id that fits is taken
    await handle(delivery('a'.repeat(255)))
    expect(ran).toBe(1)
  })

  it('lets errors other than a duplicate id through instead of taking them for a duplicate', async () => {
    // a table with a rule of its own (only known consumers): INSERT IGNORE turned its violation
    // into "0 rows inserted", which read as a duplicate, and the message was acked without running
    const consumers = await inboxTable('inbox_consumers')
    const table = await inboxTable('inbox_fk')
    await pool.query(
      `CREATE TABLE \`${consumers}\` (name VARCHAR(191) NOT NULL PRIMARY KEY) ENGINE=InnoDB`,
    )
    await pool.query(
      `CREATE TABLE \`${table}\` (
        consumer VARCHAR(191) NOT NULL,
        message_id VARBINARY(255) NOT NULL,
        handled_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
        PRIMARY KEY (consumer, message_id),
        FOREIGN KEY (consumer) REFERENCES \`${consumers}\` (name)
      ) ENGINE=InnoDB`,
    )
    const inbox = createInbox({ pool, table, consumer: 'billing' })
    let ran = 0
    const handle = inbox.handler(async () => {
      ran++
    })
    await expect(handle(delivery('m-1'))).rejects.toThrow(/foreign key constraint/i)
    expect(ran).toBe(0)
    expect(inbox.stats()).toEqual({ handled: 0, duplicates: 0 })
  })

  it('the README migration turns a table of the old schema into one that compares ids byte for byte', async () => {
    const table = await inboxTable('inbox_old')
    // the schema of earlier versions
    await pool.query(
      `CREATE TABLE \`${table}\` (
        consumer VARCHAR(191) NOT NULL,
        message_id VARCHAR(128) NOT NULL,
        handled_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
        PRIMARY KEY (consumer, message_id)
      ) ENGINE=InnoDB`,
    )
    await pool.query(
      `INSERT INTO \`${table}\` (consumer, message_id) VALUES ('billing', 'Order-7')`,
    )
    await pool.query(`ALTER TABLE \`${table}\` MODIFY message_id VARBINARY(255) NOT NULL`)
    const inbox = createInbox({ pool, table, consumer: 'billing' })
    await inbox.createTable(pool)
    const ran: string[] = []
    const handle = inbox.handler(async (m) => {
      ran.push(m.messageId as string)
    })
    for (const id of ['Order-7', 'order-7', 'x', 'x ']) await handle(delivery(id))
    expect(ran).toEqual(['order-7', 'x', 'x '])
    expect(inbox.stats()).toEqual({ handled: 3, duplicates: 1 })
  })

  it('fuzz: two distinct ids are never taken for duplicates, and a refused id is an InvalidMessageIdError', async () => {
    const table = await inboxTable('inbox_fuzz')
    const inbox = createInbox({ pool, table, consumer: 'fuzz' })
    await inbox.createTable(pool)
    const ran: string[] = []
    const handle = inbox.handler(async (m) => {
      ran.push(m.messageId as string)
    })
    const id = fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.string({ unit: 'binary', maxLength: 12 }),
      fc.string({
        unit: fc.constantFrom('a', 'A', ' ', 'e', '\u00e9', '\u0000', '\t'),
        maxLength: 6,
      }),
      fc.string({ minLength: 120, maxLength: 300 }),
    )
    // the near misses a case-insensitive, pad-space or truncating comparison takes for equal
    const pair = fc.oneof(
      fc.tuple(id, id),
      id.map((a) => [a, a] as const),
      id.map((a) => [a, a.toUpperCase()] as const),
      id.map((a) => [a, a.toLowerCase()] as const),
      fc.tuple(id, fc.stringMatching(/^ {1,3}$/)).map(([a, pad]) => [a, a + pad] as const),
      fc
        .tuple(
          fc.string({ minLength: 128, maxLength: 200 }),
          fc.string({ maxLength: 3 }),
          fc.string({ maxLength: 3 }),
        )
        .map(([shared, x, y]) => [shared + x, shared + y] as const),
    )
    let run = 0
    await fc.assert(
      fc.asyncProperty(pair, async ([a, b]) => {
        run++
        const ids = [`${run}|${a}`, `${run}|${b}`]
        const outcomes: string[] = []
        for (const messageId of ids) {
          const before = ran.length
          const error = await Promise.resolve(handle(delivery(messageId))).then(
            () => undefined,
            (e: unknown) => e,
          )
          if (error !== undefined) {
            expect(error).toBeInstanceOf(InvalidMessageIdError)
            outcomes.push('refused')
          } else outcomes.push(ran.length > before ? 'handled' : 'duplicate')
        }
        if (ids[0] === ids[1]) {
          expect(outcomes[1]).toBe(outcomes[0] === 'refused' ? 'refused' : 'duplicate')
        } else {
          expect(outcomes).not.toContain('duplicate')
        }
      }),
      { numRuns: 50, seed: 2222 },
    )
  }, 60_000)
})
