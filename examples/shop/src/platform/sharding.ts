/**
 * `@ballast/sharding` for the shop: users, email index rows, carts and orders live on the shard
 * the router gives for the user id (the email for the email index); writes run in transactions
 * on the shard's primary, reads go to the replica with read-your-writes through the router's
 * causal token (kept in the session, so any instance honours it). Order ids come from the
 * package's id generator and carry the user's slot, so an order id alone finds its shard.
 *
 * Every router routes by the shared slot map (`createSlotMapStore`, a table in the catalog
 * database on the standard server): which shard owns each slot, followed by every process, so
 * the ops page can move slots to a new shard while orders are placed (see platform/reshard.ts).
 */
import {
  CausalToken,
  createIdGenerator,
  createShardRouter,
  createSlotMapStore,
  type IdGenerator,
  isShardingError,
  type MovedTable,
  type ShardConfig,
  type ShardRouter,
  type ShardRouterStats,
  type SlotKey,
  type SlotMapStore,
} from '@ballast/sharding'
import type { PoolOptions } from 'mysql2'
import type { MysqlTarget, ShardSpec, ShopConfig } from '../config.js'

export type { Row, ShardRouter, ShardTransaction, SlotMapStore } from '@ballast/sharding'

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

/**
 * How often each process polls the slot map's version. A poll is one primary-key read on the
 * standard server; with ~10 processes that is ~40 tiny reads a second.
 */
export const SLOT_MAP_INTERVAL_MS = 250

/**
 * How old a router's map may be before its next statement reads the map first (the store's
 * `lease`). Short, so a move may fence soon after it begins (`fenceDelay` below). Its cost: if
 * the standard server is away for longer than this, statements fail until it answers again;
 * that server holds the catalog and shards b and c too, so the shop is down then anyway.
 */
export const SLOT_MAP_LEASE_MS = 3000

/** Bound on one statement of the shop's routers (`queryTimeout`). */
export const QUERY_TIMEOUT_MS = 3000

/**
 * The least `fenceDelay` of a move (the mover waits this long after a move begins before it may
 * fence): every router has seen the move by `lease`, and a statement it routed before has
 * finished by `queryTimeout`; one more second for a process whose timers ran late.
 */
export const SHOP_FENCE_DELAY_MS = SLOT_MAP_LEASE_MS + QUERY_TIMEOUT_MS + 1000

/** The shards the first slot map places slots on, as the static ring did before the map. */
export const INITIAL_SHARDS: readonly string[] = ['a', 'b']

/**
 * The tables whose rows move with their slots, each with the column that holds the key the
 * shop routes its rows by. Every table carries one: the order tables have the user id beside
 * the order id (an order id routes by the slot it carries, which the mover cannot read back
 * from the id, so the rows carry the user id whose slot that is). The outbox (`mq_outbox`) does
 * not move: each shard's relay publishes what its shard holds.
 */
export const MOVED_TABLES: readonly MovedTable[] = [
  { table: 'users', key: 'id' },
  { table: 'email_index', key: 'email' },
  { table: 'cart_items', key: 'user_id' },
  { table: 'orders', key: 'user_id' },
  { table: 'order_items', key: 'user_id' },
  { table: 'order_events', key: 'user_id' },
  { table: 'payments', key: 'user_id' },
]

/** A shard as `@ballast/sharding` takes it (routers, the mover, the resharder). */
export function shardConfig(s: ShardSpec): ShardConfig {
  return {
    id: s.id,
    primary: poolOptions(s.primary),
    replicas: s.replica ? [poolOptions(s.replica)] : [],
  }
}

/** The shop's slot map store (not loaded yet): every process that routes or moves uses these settings. */
export function createShopSlotMap(server: MysqlTarget): SlotMapStore {
  return createSlotMapStore({
    server: { ...poolOptions(server), enableKeepAlive: true },
    interval: SLOT_MAP_INTERVAL_MS,
    lease: SLOT_MAP_LEASE_MS,
  })
}

/**
 * The shop's slot map store, loaded. A process starting on a busy machine may find the server
 * slow to accept a connection: the load is tried again a few times (bounded) before the start
 * fails (the supervisor restarts a service then).
 */
export async function loadShopSlotMap(server: MysqlTarget): Promise<SlotMapStore> {
  const slotMap = createShopSlotMap(server)
  for (let attempt = 1; ; attempt++) {
    try {
      await slotMap.load()
      return slotMap
    } catch (error) {
      if (attempt >= 5 || !isShardingError(error) || !error.retryable) {
        await slotMap.close()
        throw error
      }
      await new Promise((resolve) => setTimeout(resolve, 500 * attempt))
    }
  }
}

/**
 * Creates the map's table and, the first time, the map: the static ring's placement of
 * {@link INITIAL_SHARDS}, so a shop from before the map keeps every key where it was. A map
 * already there (resharded, perhaps) is kept. The supervisor calls it once, before any process
 * routes.
 */
export async function initializeShopSlotMap(server: MysqlTarget): Promise<void> {
  const store = createShopSlotMap(server)
  try {
    await store.initialize({ shards: INITIAL_SHARDS.map((id) => ({ id })), slots: SLOTS })
  } finally {
    await store.close()
  }
}

export interface ShopRouterOptions {
  /** Connections per server pool. */
  connectionLimit?: number
  /** Replica lag checks; 0 turns them off (the seed and one-off tools). */
  healthCheckIntervalMs?: number
}

/** A router and the slot map store it follows; `close()` closes both. */
export interface ShopRouting {
  router: ShardRouter
  slotMap: SlotMapStore
  close(): Promise<void>
}

/**
 * The shop's shard router: every process builds it from the same shard list (shard c's servers
 * too, from the start, though it owns nothing until resharded) and follows the shared slot map,
 * which it loads first.
 */
export async function openShopRouter(
  config: Pick<ShopConfig, 'shards' | 'slotMapDb'>,
  options: ShopRouterOptions = {},
): Promise<ShopRouting> {
  const slotMap = await loadShopSlotMap(config.slotMapDb)
  const router = createShardRouter({
    shards: config.shards.map(shardConfig),
    slotMap,
    connectionLimit: options.connectionLimit ?? 5,
    healthCheckInterval: options.healthCheckIntervalMs ?? 1000,
    // A user waits at most this long for the replica to apply their own write, then the primary answers.
    gtidWaitTimeout: 250,
    queryTimeout: QUERY_TIMEOUT_MS,
    connectTimeout: 1000,
    maxReplicaLag: 5000,
  })
  return {
    router,
    slotMap,
    async close() {
      await router.close()
      await slotMap.close()
    },
  }
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
  /** The version of the slot map this process follows (read by its store every 250 ms). */
  slotMapVersion: number
  /** Writes of moving slots that checked the source's fence, and those it refused. */
  fenceChecks: number
  fenceChecksRefused: number
}

/** What the ops page shows of a router: shard counters, each replica's health and lag, the slot map it follows. */
export function routerHealth(routing: Pick<ShopRouting, 'router' | 'slotMap'>): RouterHealth {
  const stats: ShardRouterStats = routing.router.stats()
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
    // The store's: the map this process polled last (the router takes it up at its next statement).
    slotMapVersion: routing.slotMap.version,
    fenceChecks: stats.fenceChecks,
    fenceChecksRefused: stats.fenceChecksRefused,
  }
}
