/**
 * The chaos switch's "shard-primary": shard b lives on a MariaDB primary and GTID replica of
 * the shop's own, and the switch runs the operator's switchover (`switchover()` of
 * `@ballast/testkit`: the old primary made read-only, the replica caught up, promoted) and then
 * makes the old primary a replica of the new one, so the pair is a pair again and the next
 * switch (or "off") can go back the same way. The supervisor then tells every process that
 * routes to the shard to follow (`router.setPrimary`), over the IPC channel the services
 * already have: the messages below.
 */
import mysql from 'mysql2/promise'
import type { MysqlTarget } from '../config.js'

/** Supervisor → service: route shard `shard` to `primary` from now on. */
export interface ShardPrimaryMessage {
  type: 'shard-primary'
  /** Counts the switches, so an acknowledgement names the one it answers. */
  seq: number
  shard: string
  primary: MysqlTarget
}

/** Service → supervisor: the switch `seq` was followed (or failed with `error`). */
export interface ShardPrimaryAck {
  type: 'shard-primary-followed'
  seq: number
  shard: string
  error?: string
}

export function isShardPrimaryMessage(m: unknown): m is ShardPrimaryMessage {
  const x = m as Partial<ShardPrimaryMessage> | null
  return (
    typeof x === 'object' &&
    x !== null &&
    x.type === 'shard-primary' &&
    typeof x.seq === 'number' &&
    typeof x.shard === 'string' &&
    typeof x.primary === 'object' &&
    x.primary !== null
  )
}

export function isShardPrimaryAck(m: unknown): m is ShardPrimaryAck {
  const x = m as Partial<ShardPrimaryAck> | null
  return (
    typeof x === 'object' &&
    x !== null &&
    x.type === 'shard-primary-followed' &&
    typeof x.seq === 'number'
  )
}

/**
 * In a service: calls `follow` for every shard-primary message from the supervisor and
 * acknowledges it. Several parts of one process (a router, the outbox relays) follow together.
 */
export function onShardPrimary(
  follow: (shard: string, primary: MysqlTarget) => Promise<void>,
): () => void {
  const listener = (m: unknown) => {
    if (!isShardPrimaryMessage(m)) return
    follow(m.shard, m.primary).then(
      () => process.send?.({ type: 'shard-primary-followed', seq: m.seq, shard: m.shard }),
      (error: unknown) =>
        process.send?.({
          type: 'shard-primary-followed',
          seq: m.seq,
          shard: m.shard,
          error: String((error as Error)?.message ?? error),
        }),
    )
  }
  process.on('message', listener)
  return () => {
    process.off('message', listener)
  }
}

const REPL_USER = 'repl'
const REPL_PASSWORD = 'repl'

async function admin(url: string): Promise<mysql.Connection> {
  return mysql.createConnection({ uri: url, connectTimeout: 2000, multipleStatements: true })
}

/**
 * Makes `server` (a read-only former primary) a GTID replica of `primary`, from where its own
 * binary log ends, with semi-synchronous acknowledgement on when `semiSync` (and the new
 * primary waiting for it), and waits (bounded) until both replication threads run.
 */
export async function rejoinAsReplica(options: {
  /** Administrator URL of the server that becomes the replica. */
  server: string
  /** Administrator URL of the primary it replicates. */
  primary: string
  semiSync: boolean
  semiSyncTimeout?: number
  timeout?: number
}): Promise<void> {
  const deadline = Date.now() + (options.timeout ?? 10_000)
  const primaryUrl = new URL(options.primary)
  const onPrimary = await admin(options.primary)
  const onReplica = await admin(options.server)
  try {
    if (options.semiSync) {
      await onPrimary.query(
        `SET GLOBAL rpl_semi_sync_master_timeout = ${Math.trunc(options.semiSyncTimeout ?? 1000)}; SET GLOBAL rpl_semi_sync_master_enabled = ON; SET GLOBAL rpl_semi_sync_slave_enabled = OFF`,
      )
      await onReplica.query(
        'SET GLOBAL rpl_semi_sync_master_enabled = OFF; SET GLOBAL rpl_semi_sync_slave_enabled = ON',
      )
    }
    await onReplica.query(
      `SET GLOBAL read_only = ON; STOP SLAVE; SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos; CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = '${REPL_USER}', MASTER_PASSWORD = '${REPL_PASSWORD}', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1; START SLAVE`,
      [primaryUrl.hostname, Number(primaryUrl.port || 3306)],
    )
    for (;;) {
      const [rows] = (await onReplica.query('SHOW SLAVE STATUS')) as unknown as [
        Array<Record<string, unknown>>,
      ]
      const s = rows[0]
      if (s?.Slave_IO_Running === 'Yes' && s?.Slave_SQL_Running === 'Yes') return
      if (Date.now() > deadline)
        throw new Error(
          `${options.server.replace(/\/\/[^@]*@/, '//')} did not start replicating (IO=${String(s?.Slave_IO_Running)} SQL=${String(s?.Slave_SQL_Running)} ${String(s?.Last_IO_Error ?? '')}${String(s?.Last_SQL_Error ?? '')})`,
        )
      await new Promise((r) => setTimeout(r, 50))
    }
  } finally {
    await onPrimary.end().catch(() => {})
    await onReplica.end().catch(() => {})
  }
}
