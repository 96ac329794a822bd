import { CausalToken } from '../causalToken.js'
import { QUIET, type Server } from './server.js'

/** What the router knows about one replica. */
export interface ReplicaState {
  server: Server
  /** The replica's applied GTID position, as far as the router knows (never ahead of the truth). */
  applied: CausalToken
  /** Measured lag in ms; `Infinity` when replication is stopped or the replica is unreachable; `undefined` before the first check. */
  lagMs: number | undefined
  /** Whether the last check passed (reachable, replicating, lag within the bound). */
  healthy: boolean
  /** Why the last check failed, if it did. */
  reason: string | undefined
  reads: number
  checkedAt: number
}

interface Sample {
  /**
   * When the sample was taken, by `performance.now()`: a monotonic clock, so an NTP step of the
   * wall clock can neither make an old sample look newer than a request (and drop a real
   * position from its token) nor distort measured lag.
   */
  at: number
  position: CausalToken
}

export interface MonitoredShard {
  id: string
  primary: Server
  replicas: ReplicaState[]
  samples: Sample[]
}

type Row = Record<string, unknown>

/**
 * One health round of a shard: samples the primary's `@@gtid_binlog_pos`, then reads each
 * replica's `SHOW SLAVE STATUS` and `@@gtid_slave_pos` in one round trip, and measures lag as
 * the age of the newest primary sample the replica has applied (an upper bound, in steps of
 * the check interval), never below `Seconds_Behind_Master`. A stopped SQL or IO thread, an
 * empty slave status or an unreachable replica is infinite lag.
 */
export async function checkShard(
  shard: MonitoredShard,
  timeoutMs: number,
  maxLagMs: number,
  keepSamplesMs: number,
  onError: (server: Server, error: unknown) => void,
): Promise<void> {
  const at = performance.now()
  try {
    const rows = await shard.primary.query(
      'SELECT @@GLOBAL.gtid_binlog_pos AS p',
      [],
      timeoutMs,
      undefined,
      QUIET,
    )
    const p = (rows as Row[])[0]?.p
    if (typeof p === 'string') {
      shard.samples.push({ at, position: CausalToken.of(shard.id, p) })
      const cutoff = at - keepSamplesMs
      while (shard.samples.length > 2 && shard.samples[0]!.at < cutoff) shard.samples.shift()
    }
  } catch (error) {
    onError(shard.primary, error)
  }
  await Promise.all(
    shard.replicas.map(async (replica) => {
      try {
        const results = await replica.server.query(
          'SHOW SLAVE STATUS; SELECT @@GLOBAL.gtid_slave_pos AS p',
          [],
          timeoutMs,
          undefined,
          QUIET,
        )
        const [statusRows, posRows] = results as [Row[], Row[]]
        const status = statusRows[0]
        const p = posRows[0]?.p
        const now = performance.now()
        replica.checkedAt = now
        if (typeof p === 'string') replica.applied = CausalToken.of(shard.id, p)
        if (status === undefined)
          return verdict(replica, Infinity, maxLagMs, 'not a replica (empty SHOW SLAVE STATUS)')
        if (status.Slave_SQL_Running !== 'Yes')
          return verdict(replica, Infinity, maxLagMs, 'SQL thread stopped')
        if (status.Slave_IO_Running !== 'Yes')
          return verdict(replica, Infinity, maxLagMs, 'IO thread not running')
        const sbm = status.Seconds_Behind_Master
        if (sbm === null || sbm === undefined)
          return verdict(replica, Infinity, maxLagMs, 'lag unknown')
        return verdict(
          replica,
          lagOf(shard, replica.applied, now, Number(sbm) * 1000),
          maxLagMs,
          'lag over the bound',
        )
      } catch (error) {
        onError(replica.server, error)
        verdict(replica, Infinity, maxLagMs, `unreachable: ${(error as Error).message}`)
      }
    }),
  )
}

function verdict(replica: ReplicaState, lagMs: number, maxLagMs: number, reason: string): void {
  replica.lagMs = lagMs
  replica.healthy = lagMs <= maxLagMs
  replica.reason = replica.healthy ? undefined : reason
}

function lagOf(
  shard: MonitoredShard,
  applied: CausalToken,
  now: number,
  secondsBehindMs: number,
): number {
  const samples = shard.samples
  if (samples.length === 0) return secondsBehindMs
  const newest = samples.length - 1
  for (let i = newest; i >= 0; i--) {
    if (applied.covers(samples[i]!.position, shard.id)) {
      return i === newest ? 0 : Math.max(secondsBehindMs, now - samples[i]!.at)
    }
  }
  return Math.max(secondsBehindMs, now - samples[0]!.at)
}
