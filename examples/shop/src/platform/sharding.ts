/**
 * ADAPTER for `@ballast/sharding`. The shop codes against {@link ShardRouter}: rows of a user
 * live on the shard the hash ring gives for the user id; writes go to the shard's primary in a
 * transaction, reads to its replica unless read-your-writes needs the primary. Until the
 * package's router lands, a minimal in-shop version lives here (mysql2 pools, GTID waits).
 */
import type { HashRing } from '@ballast/lb'
import mysql from 'mysql2/promise'
import type { MysqlTarget, ShardSpec } from '../config.js'
import { shardRing } from '../data/ids.js'

export type Row = mysql.RowDataPacket
export interface Queryable {
  rows<T extends Row = Row>(sql: string, params?: unknown[]): Promise<T[]>
  exec(sql: string, params?: unknown[]): Promise<mysql.ResultSetHeader>
}

export interface ShardHealth {
  shard: string
  primary: { up: boolean; error?: string }
  replica?: { up: boolean; lagSeconds: number | null; error?: string }
}

export interface ShardRouterStats {
  primaryReads: number
  replicaReads: number
  replicaFallbacks: number
  rywPrimaryReads: number
  writes: number
}

export interface ShardRouter {
  readonly shardIds: readonly string[]
  shardFor(key: string): string
  /** A transaction on the shard's primary; returns a read-your-writes token for the session. */
  write<T>(
    shardId: string,
    fn: (tx: Queryable) => Promise<T>,
    options?: { isolation?: 'READ COMMITTED' },
  ): Promise<{ value: T; token: string | undefined }>
  /** A read from the replica, or from the primary when a token says the replica lags behind it. */
  read<T>(shardId: string, fn: (q: Queryable) => Promise<T>, tokens?: readonly string[]): Promise<T>
  health(): Promise<ShardHealth[]>
  stats(): ShardRouterStats
  close(): Promise<void>
}

const QUERY_TIMEOUT = 2000

function pool(t: MysqlTarget, size: number): mysql.Pool {
  return mysql.createPool({
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    connectionLimit: size,
    connectTimeout: 1000,
    enableKeepAlive: true,
  })
}

function q(c: mysql.Pool | mysql.PoolConnection): Queryable {
  return {
    async rows<T extends Row>(sql: string, params: unknown[] = []) {
      const [rows] = await c.query<T[]>({ sql, timeout: QUERY_TIMEOUT }, params)
      return rows
    },
    async exec(sql: string, params: unknown[] = []) {
      const [res] = await c.query<mysql.ResultSetHeader>({ sql, timeout: QUERY_TIMEOUT }, params)
      return res
    },
  }
}

interface Shard {
  id: string
  primary: mysql.Pool
  replica: mysql.Pool | undefined
  replicaDownUntil: number
}

export function createShardRouter(shards: readonly ShardSpec[], poolSize = 5): ShardRouter {
  const ring: HashRing = shardRing(shards.map((s) => s.id))
  const byId = new Map<string, Shard>()
  for (const s of shards) {
    byId.set(s.id, {
      id: s.id,
      primary: pool(s.primary, poolSize),
      replica: s.replica ? pool(s.replica, poolSize) : undefined,
      replicaDownUntil: 0,
    })
  }
  const stats: ShardRouterStats = {
    primaryReads: 0,
    replicaReads: 0,
    replicaFallbacks: 0,
    rywPrimaryReads: 0,
    writes: 0,
  }
  const shard = (id: string): Shard => {
    const s = byId.get(id)
    if (!s) throw new Error(`unknown shard ${JSON.stringify(id)}`)
    return s
  }

  return {
    shardIds: shards.map((s) => s.id),
    shardFor: (key) => ring.get(key),

    async write(shardId, fn, options = {}) {
      const s = shard(shardId)
      const conn = await s.primary.getConnection()
      try {
        if (options.isolation)
          await conn.query(`SET TRANSACTION ISOLATION LEVEL ${options.isolation}`)
        await conn.beginTransaction()
        const value = await fn(q(conn))
        await conn.commit()
        stats.writes++
        let token: string | undefined
        if (s.replica) {
          const [rows] = await conn.query<Row[]>('SELECT @@last_gtid AS g')
          const gtid = String(rows[0]?.g ?? '')
          if (gtid) token = `${shardId}|${gtid}`
        }
        return { value, token }
      } catch (err) {
        await conn.rollback().catch(() => {})
        throw err
      } finally {
        conn.release()
      }
    },

    async read(shardId, fn, tokens = []) {
      const s = shard(shardId)
      if (!s.replica || Date.now() < s.replicaDownUntil) {
        stats.primaryReads++
        return fn(q(s.primary))
      }
      const gtid = tokens.find((t) => t.startsWith(`${shardId}|`))?.slice(shardId.length + 1)
      let conn: mysql.PoolConnection | undefined
      try {
        conn = await s.replica.getConnection()
        if (gtid) {
          // Wait briefly for the replica to apply our own write; if it cannot, read the primary.
          const [rows] = await conn.query<Row[]>(
            { sql: 'SELECT MASTER_GTID_WAIT(?, 0.25) AS w', timeout: 1000 },
            [gtid],
          )
          if (Number(rows[0]?.w) !== 0) {
            conn.release()
            conn = undefined
            stats.rywPrimaryReads++
            return fn(q(s.primary))
          }
        }
        const value = await fn(q(conn))
        stats.replicaReads++
        return value
      } catch (err) {
        if (conn) conn.destroy()
        conn = undefined
        const code = (err as { code?: string }).code ?? ''
        // SQL errors are the caller's; connection trouble sends reads to the primary for a while.
        if (code.startsWith('ER_') && code !== 'ER_CON_COUNT_ERROR') throw err
        s.replicaDownUntil = Date.now() + 3000
        stats.replicaFallbacks++
        return fn(q(s.primary))
      } finally {
        conn?.release()
      }
    },

    async health() {
      const out: ShardHealth[] = []
      for (const s of byId.values()) {
        const h: ShardHealth = { shard: s.id, primary: { up: false } }
        try {
          await s.primary.query({ sql: 'SELECT 1', timeout: 1000 })
          h.primary.up = true
        } catch (err) {
          h.primary.error = (err as Error).message
        }
        if (s.replica) {
          try {
            const [rows] = await s.replica.query<Row[]>({ sql: 'SHOW SLAVE STATUS', timeout: 1000 })
            const lag = rows[0]?.Seconds_Behind_Master
            h.replica = {
              up: true,
              lagSeconds: lag === null || lag === undefined ? null : Number(lag),
            }
          } catch (err) {
            h.replica = { up: false, lagSeconds: null, error: (err as Error).message }
          }
        }
        out.push(h)
      }
      return out
    },
    stats: () => ({ ...stats }),
    async close() {
      for (const s of byId.values()) {
        await s.primary.end().catch(() => {})
        await s.replica?.end().catch(() => {})
      }
    },
  }
}
