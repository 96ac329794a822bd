/**
 * `@ballast/mq`'s transactional outbox: checkout writes `order.placed` into the shard's outbox
 * table inside its transaction (`createOutbox().enqueue`), and every order instance runs one
 * relay per shard (`createOutboxRelay`) that claims unsent rows with `FOR UPDATE SKIP LOCKED`
 * in READ COMMITTED, publishes them with confirms and marks them sent. A crash between publish
 * and commit sends a row again: the consumers are idempotent.
 */
import {
  type Broker,
  createOutbox,
  createOutboxRelay,
  type Outbox,
  type OutboxRelay,
  type OutboxRelayStats,
  type SqlConnection,
} from '@ballast/mq'
import type { ShardTransaction } from '@ballast/sharding'
import mysql from 'mysql2/promise'
import type { MysqlTarget, ShardSpec } from '../config.js'

/** The outbox table on every shard (the package's layout, created by `outbox.createTable`). */
export const OUTBOX_TABLE = 'mq_outbox'

export const outbox: Outbox = createOutbox({ table: OUTBOX_TABLE })

/**
 * The shard router's transaction as the connection `outbox.enqueue` writes on. mq's
 * `SqlConnection` wants mysql2's `[rows, fields]` tuple; sharding's transaction resolves to the
 * rows alone, and enqueue ignores the result, so the tuple is made up here.
 */
export function outboxConnection(tx: ShardTransaction): SqlConnection {
  return {
    query: async (sql, values) => [await tx.query(sql, values ?? []), undefined],
  }
}

export interface ShopRelays {
  stats(): Promise<{
    relays: Record<string, OutboxRelayStats & { pending: number | null; lastError?: string }>
  }>
  /**
   * Moves shard `shardId`'s relay to a new primary (after a switchover): a relay on a pool of
   * the new primary takes over, the old one is closed. A row the old relay published but could
   * not mark sent (the old primary turned read-only) is published again: consumers are idempotent.
   */
  setPrimary(shardId: string, primary: MysqlTarget): Promise<void>
  close(): Promise<void>
}

/** One relay per shard primary, each on a small pool of its own. */
export function startOutboxRelays(shards: readonly ShardSpec[], broker: Broker): ShopRelays {
  const start = (s: { id: string; primary: MysqlTarget }) => {
    const pool = mysql.createPool({
      host: s.primary.host,
      port: s.primary.port,
      user: s.primary.user,
      password: s.primary.password,
      database: s.primary.database,
      connectionLimit: 2,
      connectTimeout: 1000,
      enableKeepAlive: true,
    })
    pool.on('connection', (c) => c.on('error', () => {}))
    const relay: OutboxRelay = createOutboxRelay({
      pool,
      broker,
      outbox,
      batchSize: 50,
      pollInterval: 200,
      // Rows are never given up on: a long broker outage must not strand orders.
      maxAttempts: 1_000_000,
      // Both shards' tables are called alike: the shard tells their series apart.
      name: `${outbox.table}@${s.id}`,
    })
    const state: { lastError?: string } = {}
    relay.on('relay-failed', ({ error }) => {
      state.lastError = error.message
    })
    relay.on('row-failed', ({ error }) => {
      state.lastError = error.message
    })
    return { id: s.id, pool, relay, state }
  }
  const relays = shards.map(start)
  return {
    async setPrimary(shardId, primary) {
      const i = relays.findIndex((r) => r.id === shardId)
      const old = relays[i]
      if (!old) throw new Error(`no relay for shard ${shardId}`)
      relays[i] = start({ id: shardId, primary })
      await old.relay.close()
      await old.pool.end().catch(() => {})
    },
    async stats() {
      const out: Record<string, OutboxRelayStats & { pending: number | null; lastError?: string }> =
        {}
      for (const r of relays) {
        let pending: number | null = null
        try {
          const [rows] = await r.pool.query<mysql.RowDataPacket[]>({
            sql: `SELECT COUNT(*) AS n FROM ${OUTBOX_TABLE} WHERE sent_at IS NULL`,
            timeout: 1000,
          })
          pending = Number(rows[0]?.n ?? 0)
        } catch {
          pending = null
        }
        out[r.id] = { ...r.relay.stats(), pending, ...r.state }
      }
      return { relays: out }
    },
    async close() {
      for (const r of relays) await r.relay.close()
      for (const r of relays) await r.pool.end().catch(() => {})
    },
  }
}
