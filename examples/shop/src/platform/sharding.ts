/**
 * `@ballast/sharding` for the shop: users, email index rows, carts and orders live on the shard
 * the router gives for the user id (the email for the email index); writes run in transactions
 * on the shard's primary, reads go to the replica with read-your-writes through the router's
 * causal token (kept in the session, so any instance honours it). Order ids come from the
 * package's id generator and carry the user's slot, so an order id alone finds its shard.
 */
import {
  CausalToken,
  createIdGenerator,
  createShardRouter,
  type IdGenerator,
  type ShardRouter,
  type ShardRouterStats,
  type SlotKey,
} from '@ballast/sharding'
import type { PoolOptions } from 'mysql2'
import type { MysqlTarget, ShardSpec } from '../config.js'

export type { Row, ShardRouter, ShardTransaction } from '@ballast/sharding'

/** Slots keys hash to; order ids embed the slot (`SLOT_BITS = log2(SLOTS)`). Fixed forever. */
export const SLOTS = 4096
const SLOT_BITS = 12

function poolOptions(t: MysqlTarget): PoolOptions {
  return {
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    enableKeepAlive: true,
  }
}

export interface ShopRouterOptions {
  /** Connections per server pool. */
  connectionLimit?: number
  /** Replica lag checks; 0 turns them off (the seed and one-off tools). */
  healthCheckIntervalMs?: number
}

/** The shop's shard router: every process builds it from the same shard list and slot count. */
export function createShopRouter(
  shards: readonly ShardSpec[],
  options: ShopRouterOptions = {},
): ShardRouter {
  return createShardRouter({
    shards: shards.map((s) => ({
      id: s.id,
      primary: poolOptions(s.primary),
      replicas: s.replica ? [poolOptions(s.replica)] : [],
    })),
    slots: SLOTS,
    connectionLimit: options.connectionLimit ?? 5,
    healthCheckInterval: options.healthCheckIntervalMs ?? 1000,
    // A user waits at most this long for the replica to apply their own write, then the primary answers.
    gtidWaitTimeout: 250,
    queryTimeout: 3000,
    connectTimeout: 1000,
    maxReplicaLag: 5000,
  })
}

/**
 * Points the router's shard at a new primary after a switchover (the supervisor's
 * "shard-primary" switch tells every process): new statements go there at once, statements
 * still on the old primary fail as retryable `ShardUnavailableError`s.
 */
export function followShardPrimary(
  router: ShardRouter,
  shardId: string,
  primary: MysqlTarget,
): Promise<void> {
  return router.setPrimary(shardId, poolOptions(primary))
}

/**
 * Order ids: 64-bit, time-ordered, carrying the user's slot. `workerId` must differ between the
 * processes that make ids at the same time (the order instances); decoding needs none.
 */
export function createOrderIds(workerId = 0): IdGenerator {
  return createIdGenerator({ workerId, slotBits: SLOT_BITS, workerBits: 4, sequenceBits: 6 })
}

/** The shard key of an order: the slot its id carries; `undefined` for a malformed id. */
export function orderKey(ids: IdGenerator, orderId: string): SlotKey | undefined {
  if (!/^[1-9]\d{0,19}$/.test(orderId)) return undefined
  try {
    return ids.slotOf(orderId)
  } catch {
    return undefined
  }
}

/**
 * Runs `fn` with the session's causal token (read-your-writes across requests and instances)
 * and returns the token afterwards, which holds the GTIDs of the writes `fn` made.
 */
export async function withCausalToken<T>(
  router: ShardRouter,
  token: unknown,
  fn: () => Promise<T>,
): Promise<{ value: T; token: string }> {
  // Sessions from before the swap held a list; anything but a token string starts afresh.
  const start = typeof token === 'string' ? token : ''
  return router.run({ causalToken: safeParse(start) }, async () => {
    const value = await fn()
    return { value, token: router.causalToken().toString() }
  })
}

/**
 * The token lives in the server-side session (Redis), which the client cannot write, so its
 * unsigned form is read here; a token that travelled through a cookie would need the router's
 * `secrets` and `router.signCausalToken()` instead.
 */
function safeParse(token: string): CausalToken {
  if (token === '') return CausalToken.empty
  try {
    return CausalToken.parse(token)
  } catch {
    // A token the router cannot read is dropped rather than failing the request.
    return CausalToken.empty
  }
}

/** What the ops page shows of a router (sent as JSON by each service's stats endpoint). */
export interface RouterHealth {
  shards: Record<string, { primaryQueries: number; replicaQueries: number; failed: number }>
  replicas: {
    id: string
    shard: string
    available: boolean
    healthy: boolean
    /** -1: replication stopped; null: not measured yet. */
    lagMs: number | null
    reason: string | undefined
  }[]
  replicaFallbacks: number
  gtidWaits: number
  gtidWaitTimeouts: number
  gtidWaitsSkipped: number
}

/** What the ops page shows of a router: shard counters and each replica's health and lag. */
export function routerHealth(stats: ShardRouterStats): RouterHealth {
  return {
    shards: stats.shards,
    replicas: stats.replicas.map((r) => ({
      id: r.id,
      shard: r.shard,
      available: r.available,
      healthy: r.healthy,
      // JSON has no Infinity: a stopped replica reads as -1.
      lagMs: r.lagMs === null ? null : Number.isFinite(r.lagMs) ? r.lagMs : -1,
      reason: r.reason,
    })),
    replicaFallbacks: stats.fellBackToPrimary,
    gtidWaits: stats.gtidWaits,
    gtidWaitTimeouts: stats.gtidWaitsTimedOut,
    gtidWaitsSkipped: stats.gtidWaitsSkipped,
  }
}
