/**
 * ADAPTER for `@ballast/mq`'s transactional outbox. Rows written in a shard transaction are
 * published by this relay: it takes unsent rows with `FOR UPDATE SKIP LOCKED` (so several
 * order instances relay in parallel without sending a row twice at once), publishes each
 * with a broker confirm, and marks it sent in the same transaction. A crash between publish
 * and commit sends a row again: consumers are idempotent. Until the package's relay lands,
 * this in-shop version does the job.
 */
import type { Broker } from '@ballast/mq'
import type { Queryable, Row, ShardRouter } from './sharding.js'

export interface OutboxMessage {
  messageId: string
  topic: string
  payload: unknown
}

/** Adds a message to the outbox inside the caller's shard transaction. */
export async function enqueue(tx: Queryable, m: OutboxMessage): Promise<void> {
  await tx.exec('INSERT INTO outbox (message_id, topic, payload) VALUES (?, ?, ?)', [
    m.messageId,
    m.topic,
    JSON.stringify(m.payload),
  ])
}

export interface OutboxRelay {
  stats(): {
    published: number
    failures: number
    lastError: string | undefined
    pending: Record<string, number>
  }
  close(): Promise<void>
}

export function startOutboxRelay(
  router: ShardRouter,
  broker: Broker,
  exchange: string,
  intervalMs = 200,
): OutboxRelay {
  const s = {
    published: 0,
    failures: 0,
    lastError: undefined as string | undefined,
    pending: {} as Record<string, number>,
  }
  let stopped = false
  let running: Promise<void> | undefined
  const tick = async () => {
    for (const shardId of router.shardIds) {
      try {
        const { value } = await router.write(
          shardId,
          async (tx) => {
            const rows = await tx.rows<Row>(
              'SELECT id, message_id, topic, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED',
            )
            for (const r of rows) {
              await withTimeout(
                broker.publish(exchange, String(r.topic), JSON.parse(String(r.payload)), {
                  messageId: String(r.message_id),
                  persistent: true,
                }),
                3000,
              )
              s.published++
            }
            if (rows.length > 0) {
              await tx.exec('UPDATE outbox SET sent_at = NOW(3) WHERE id IN (?)', [
                rows.map((r) => r.id),
              ])
            }
            const [c] = await tx.rows<Row>('SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL')
            return Math.max(0, Number(c?.n ?? 0) - rows.length)
            // READ COMMITTED: no gap locks, so checkouts can add outbox rows while the relay publishes.
          },
          { isolation: 'READ COMMITTED' },
        )
        s.pending[shardId] = value
      } catch (err) {
        s.failures++
        s.lastError = (err as Error).message
      }
    }
  }
  const loop = async () => {
    while (!stopped) {
      running = tick()
      await running
      await new Promise((r) => setTimeout(r, intervalMs).unref())
    }
  }
  void loop()
  return {
    stats: () => ({ ...s, pending: { ...s.pending } }),
    async close() {
      stopped = true
      await running
    },
  }
}

/** A publish that waits on a broker outage must not hold the shard's row locks for long. */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`publish not confirmed within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
