import { observe } from '@ballast/shared'
import type { Meter } from '@opentelemetry/api'
import type { FallbackReason } from '../shardRouterEvents.js'
import {
  FALLBACK_REASON,
  GTID_WAIT_OUTCOME,
  REPLICA,
  ROLE,
  SHARD,
  TRANSACTION_OUTCOME,
} from './queryTelemetry.js'
import type { RouterCounters, Shard } from './routerInternals.js'

/** The router's observed instruments: each reads a counter `stats()` already keeps. */
const INSTRUMENTS = {
  'ballast.sharding.queries': {
    kind: 'counter',
    description: 'Statements run, per shard and role (primary, replica)',
    unit: '{query}',
  },
  'ballast.sharding.failed': {
    kind: 'counter',
    description: 'Statements that failed because a server was unreachable or timed out, per shard',
    unit: '{query}',
  },
  'ballast.sharding.switchovers': {
    kind: 'counter',
    description: 'Times a shard was pointed at a new primary (setPrimary), per shard',
    unit: '{switchover}',
  },
  'ballast.sharding.replica.lag': {
    kind: 'gauge',
    description:
      'Measured replica lag, from the health checks (+Inf when replication is stopped or the replica is unreachable)',
    unit: 's',
  },
  'ballast.sharding.replica.available': {
    kind: 'gauge',
    description: 'Whether a replica takes reads now: 1 (healthy and not ejected) or 0',
    unit: '1',
  },
  'ballast.sharding.gtid_waits': {
    kind: 'counter',
    description:
      'Read-your-writes reads on a replica, by outcome of the GTID wait: caught_up, timed_out, failed, or skipped (the replica was known to have the token)',
    unit: '{read}',
  },
  'ballast.sharding.fell_back_to_primary': {
    kind: 'counter',
    description: 'Reads meant for a replica that the primary served, per reason',
    unit: '{read}',
  },
  'ballast.sharding.scatter.calls': {
    kind: 'counter',
    description: 'Scatter-gather calls (all())',
    unit: '{call}',
  },
  'ballast.sharding.scatter.partial': {
    kind: 'counter',
    description: "Scatter-gather calls that returned partial results (onShardError: 'partial')",
    unit: '{call}',
  },
  'ballast.sharding.scatter.failed': {
    kind: 'counter',
    description: 'Scatter-gather calls that threw a ScatterGatherError',
    unit: '{call}',
  },
  'ballast.sharding.transactions': {
    kind: 'counter',
    description: 'Transactions, per outcome: committed, rolled_back',
    unit: '{transaction}',
  },
  'ballast.sharding.causal_tokens.refused': {
    kind: 'counter',
    description: 'Causal token strings refused (malformed, unsigned, tampered) and ignored',
    unit: '{token}',
  },
  'ballast.sharding.causal_positions.dropped': {
    kind: 'counter',
    description: 'Causal token positions dropped because the primary had not written them',
    unit: '{position}',
  },
} as const

/** The attribute objects of one router's points, made once: collecting allocates none per point. */
function attributesOf(shards: readonly Shard[]) {
  return {
    shards: shards.map((shard) => ({
      primary: { [SHARD]: shard.id, [ROLE]: 'primary' },
      replica: { [SHARD]: shard.id, [ROLE]: 'replica' },
      shard: { [SHARD]: shard.id },
      replicas: shard.replicas.map((r) => ({ [SHARD]: shard.id, [REPLICA]: r.server.id })),
    })),
    waits: {
      caught_up: { [GTID_WAIT_OUTCOME]: 'caught_up' },
      timed_out: { [GTID_WAIT_OUTCOME]: 'timed_out' },
      failed: { [GTID_WAIT_OUTCOME]: 'failed' },
      skipped: { [GTID_WAIT_OUTCOME]: 'skipped' },
    },
    committed: { [TRANSACTION_OUTCOME]: 'committed' },
    rolledBack: { [TRANSACTION_OUTCOME]: 'rolled_back' },
  }
}

/**
 * Registers the router's observed instruments, read from its counters when the SDK collects;
 * returns the function that unregisters them.
 */
export function observeRouter(
  meter: Meter,
  shards: readonly Shard[],
  counters: RouterCounters,
): () => void {
  const attributes = attributesOf(shards)
  const reasons = Object.keys(counters.fellBackToPrimaryByReason) as FallbackReason[]
  const reasonAttributes = reasons.map((reason) => ({ [FALLBACK_REASON]: reason }))
  return observe(meter, INSTRUMENTS, (record) => {
    shards.forEach((shard, i) => {
      const a = attributes.shards[i]!
      record('ballast.sharding.queries', shard.stats.primaryQueries, a.primary)
      if (shard.replicas.length > 0)
        record('ballast.sharding.queries', shard.stats.replicaQueries, a.replica)
      record('ballast.sharding.failed', shard.stats.failed, a.shard)
      record('ballast.sharding.switchovers', shard.stats.switchovers, a.shard)
      shard.replicas.forEach((replica, j) => {
        const ra = a.replicas[j]!
        if (replica.lagMs !== undefined)
          record('ballast.sharding.replica.lag', replica.lagMs / 1000, ra)
        const ejected = shard.balancer?.get(replica.server.id)?.ejected ?? false
        record('ballast.sharding.replica.available', replica.healthy && !ejected ? 1 : 0, ra)
      })
    })
    record('ballast.sharding.gtid_waits', counters.gtidWaitsCaughtUp, attributes.waits.caught_up)
    record('ballast.sharding.gtid_waits', counters.gtidWaitsTimedOut, attributes.waits.timed_out)
    record('ballast.sharding.gtid_waits', counters.gtidWaitsFailed, attributes.waits.failed)
    record('ballast.sharding.gtid_waits', counters.gtidWaitsSkipped, attributes.waits.skipped)
    reasons.forEach((reason, i) => {
      record(
        'ballast.sharding.fell_back_to_primary',
        counters.fellBackToPrimaryByReason[reason],
        reasonAttributes[i],
      )
    })
    record('ballast.sharding.scatter.calls', counters.scatterCalls)
    record('ballast.sharding.scatter.partial', counters.scatterPartial)
    record('ballast.sharding.scatter.failed', counters.scatterFailed)
    record('ballast.sharding.transactions', counters.committed, attributes.committed)
    record('ballast.sharding.transactions', counters.rolledBack, attributes.rolledBack)
    record('ballast.sharding.causal_tokens.refused', counters.causalTokensRefused)
    record('ballast.sharding.causal_positions.dropped', counters.causalPositionsDropped)
  })
}
