import type { FallbackReason } from './shardRouterEvents.js'

/** Counters of one shard. */
export interface ShardStats {
  /** Statements run on the primary. */
  primaryQueries: number
  /** Reads run on replicas. */
  replicaQueries: number
  /** Statements that failed because a server was unreachable or timed out. */
  failed: number
  /** Times the shard was pointed at a new primary ({@link ShardRouter.setPrimary}). */
  switchovers: number
}

/** The state of one replica, in {@link ShardRouterStats}. */
export interface ReplicaStats {
  /** The replica's id, `<shard>/replica-<n>`. */
  id: string
  /** Its shard. */
  shard: string
  /** Whether it takes reads now (healthy and not ejected). */
  available: boolean
  /** Whether the last health check passed. */
  healthy: boolean
  /** Whether lb's outlier detection has ejected it for failed reads. */
  ejected: boolean
  /** Measured lag in ms (`null` before the first check, `Infinity` when replication is stopped). */
  lagMs: number | null
  /** Why it is unhealthy, if it is. */
  reason: string | undefined
  /** Reads it served. */
  reads: number
}

/** Transaction counters, in {@link ShardRouterStats}. */
export interface TransactionStats {
  /** Transactions committed. */
  committed: number
  /** Transactions rolled back (the callback threw, a statement failed or the connection dropped). */
  rolledBack: number
}

/** Scatter-gather counters, in {@link ShardRouterStats}. */
export interface ScatterStats {
  /** Calls of {@link ShardRouter.all}. */
  calls: number
  /** Calls that returned partial results (`onShardError: 'partial'` and some shard failed). */
  partial: number
  /** Calls that threw a {@link ScatterGatherError}. */
  failed: number
}

/** A snapshot of a router's counters, from {@link ShardRouter.stats}. */
export interface ShardRouterStats {
  /** Per shard id. */
  shards: Record<string, ShardStats>
  /** Reads meant for a replica that the primary served (no healthy replica, replica error, GTID wait timeout). */
  fellBackToPrimary: number
  /** {@link ShardRouterStats.fellBackToPrimary}, per reason. */
  fellBackToPrimaryByReason: Record<FallbackReason, number>
  /** Read-your-writes reads that waited on a replica with `MASTER_GTID_WAIT`. */
  gtidWaits: number
  /** Waits the replica ended in time: it had applied the token, and it served the read. */
  gtidWaitsCaughtUp: number
  /** Waits that timed out (the read then went to the primary). */
  gtidWaitsTimedOut: number
  /** Waits whose round trip failed (the replica was unreachable or dropped the connection). */
  gtidWaitsFailed: number
  /** Read-your-writes reads that needed no wait: the replica was known to have the token already. */
  gtidWaitsSkipped: number
  /** Causal token strings refused (malformed, unsigned, tampered or signed with an unknown secret) and ignored. */
  causalTokensRefused: number
  /** Token positions dropped because the primary, sampled after the request began, had not written them. */
  causalPositionsDropped: number
  /** Transactions committed and rolled back. */
  transactions: TransactionStats
  /** Scatter-gather calls, those that returned partial results and those that failed. */
  scatter: ScatterStats
  /** Every replica. */
  replicas: ReplicaStats[]
  /** The version of the slot map the router routes by (0 without `slotMap`). */
  slotMapVersion: number
  /** Writes of moving slots that checked the owner's fence row in their transaction (with `slotMap`). */
  fenceChecks: number
  /** Fence checks the owner refused (the slot had moved): each was retried on the new owner or failed with `SlotMovedError`. */
  fenceChecksRefused: number
}
