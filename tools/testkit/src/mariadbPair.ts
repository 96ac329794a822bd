import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Connection } from 'mysql2/promise'

/**
 * A private MariaDB primary and GTID replica started from the machine's own binaries
 * (`mariadbd`, `mariadb-install-db`), for tests that stop, kill or promote servers: never the
 * shared topology of `scripts/topology.sh`. Settings follow that script's `mdb_write_cnf`.
 */

/** Options of {@link startPrivateMariadbPair}. */
export interface PrivateMariadbPairOptions {
  /**
   * MariaDB's semi-synchronous replication: the primary acknowledges a commit only once the
   * replica has the transaction in its relay log (`rpl_semi_sync_master_wait_point`
   * AFTER_COMMIT, MariaDB's default), or `semiSyncTimeout` passed (it then falls back to
   * asynchronous replication until the replica catches up).
   */
  semiSync: boolean
  /**
   * `rpl_semi_sync_master_timeout`, in milliseconds.
   * @default 1000
   */
  semiSyncTimeout?: number
  /**
   * Bound on starting both servers and replication, in milliseconds.
   * @default 60000
   */
  startTimeout?: number
}

/** One server of a {@link PrivateMariadbPair}. */
export interface PrivateMariadbServer {
  /** `127.0.0.1` port it listens on. */
  readonly port: number
  /** Its process id (signal it with {@link PrivateMariadbServer.signal}). */
  readonly pid: number
  /** `mysql://root@127.0.0.1:<port>/test`: the administrator, who `read_only` does not stop. */
  readonly url: string
  /**
   * `mysql://app:app@127.0.0.1:<port>/test`: an application user with every privilege on the
   * `test` database and none global, so `read_only` refuses its writes (MariaDB 10.11 lets
   * users with `READ_ONLY ADMIN`, such as root, write to a read-only server).
   */
  readonly appUrl: string
  /** Sends a signal: `SIGSTOP`/`SIGCONT` to pause a server, `SIGKILL` for a crash. */
  signal(signal: NodeJS.Signals): void
  /** Whether the process still runs. */
  alive(): boolean
  /** SIGKILLs the server and waits for the process to be gone (bounded). */
  kill(): Promise<void>
}

/** What {@link startPrivateMariadbPair} returns; `close()` (or `await using`) removes everything. */
export interface PrivateMariadbPair {
  /** The primary (server_id 1, read_only OFF). */
  readonly primary: PrivateMariadbServer
  /** The replica (server_id 2, read_only ON), replicating the primary with `MASTER_USE_GTID=slave_pos`. */
  readonly replica: PrivateMariadbServer
  /** Whether semi-synchronous replication is on. */
  readonly semiSync: boolean
  /** The temporary folder holding both data directories and logs. */
  readonly dir: string
  /** Kills both servers and deletes their folder (idempotent). */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Options of {@link switchover}. */
export interface SwitchoverOptions {
  /** Administrator URL of the current primary (needs `SUPER`/`READ_ONLY ADMIN`); not contacted when `planned` is false. */
  primary: string
  /** Administrator URL of the replica to promote. */
  replica: string
  /**
   * `true` (a planned switchover): the old primary is made read-only and the replica waits
   * until it has applied the old primary's last position, so no committed write is left
   * behind. `false` (unplanned: the old primary crashed or was killed): the old primary is not
   * contacted; the replica applies everything its relay log holds before it is promoted.
   * @default true
   */
  planned?: boolean
  /**
   * Bound on the whole procedure, in milliseconds.
   * @default 10000
   */
  timeout?: number
}

/** What {@link switchover} returns. */
export interface SwitchoverResult {
  /** The new primary: the `replica` URL that was given. */
  primary: string
  /** Whether the old primary was made read-only and waited for. */
  planned: boolean
  /** The old primary's `gtid_binlog_pos` once read-only (planned only). */
  oldPrimaryPosition: string | undefined
  /** The new primary's `gtid_binlog_pos` when it took writes (with `log_slave_updates`, it covers everything it applied). */
  position: string
  /** How long the procedure took, in milliseconds. */
  durationMs: number
}

const READY_POLL_MS = 50
/** Unplanned switchover: how long the replica's IO thread may take to notice its primary is gone. */
const IO_SETTLE_MS = 2000
const APP_USER = 'app'
const APP_PASSWORD = 'app'
const REPL_USER = 'repl'
const REPL_PASSWORD = 'repl'

/** Every live server this process started: SIGKILLed if the process exits without close(). */
const live = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL')
      } catch {
        // already gone
      }
    }
  })
}

function findBinary(name: string): string {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']) {
    const path = join(dir, name)
    if (existsSync(path)) return path
  }
  throw new Error(
    `${name} not found in /usr/sbin, /usr/bin or /usr/local: install the MariaDB server (apt-get install mariadb-server)`,
  )
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

function run(file: string, args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} failed: ${error.message}\n${stdout}\n${stderr}`))
      else resolve()
    })
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function connect(
  url: string | { socketPath: string },
  connectTimeoutMs: number,
): Promise<Connection> {
  const mysql = (await import('mysql2/promise')).default
  const connection = await mysql.createConnection({
    ...(typeof url === 'string' ? { uri: url } : { socketPath: url.socketPath, user: 'root' }),
    connectTimeout: connectTimeoutMs,
    multipleStatements: true,
  })
  // The connection's own error event would be unhandled if the server dies while it is idle.
  connection.on('error', () => {})
  return connection
}

async function end(connection: Connection | undefined): Promise<void> {
  if (connection === undefined) return
  await connection.end().catch(() => connection.destroy())
}

function cnf(
  dir: string,
  role: 'primary' | 'replica',
  port: number,
  options: Required<PrivateMariadbPairOptions>,
): string {
  const semi = options.semiSync
    ? role === 'primary'
      ? `rpl_semi_sync_master_enabled = ON\nrpl_semi_sync_master_timeout = ${options.semiSyncTimeout}\n`
      : 'rpl_semi_sync_slave_enabled = ON\n'
    : ''
  const replica =
    role === 'replica'
      ? 'read_only = ON\nrelay_log = relay-bin\nrelay_log_recovery = ON\nslave_net_timeout = 10\n'
      : 'read_only = OFF\n'
  return `[mysqld]
user = root
port = ${port}
bind-address = 127.0.0.1
skip-name-resolve
socket = ${join(dir, 'mariadbd.sock')}
pid-file = ${join(dir, 'mariadbd.pid')}
datadir = ${join(dir, 'data')}
# Its own tmpdir: a mariadbd starting up deletes every #sql* file in its tmpdir, which would
# break another server's bootstrap running at the same time in a shared /tmp.
tmpdir = ${join(dir, 'tmp')}
log-error = ${join(dir, 'mariadbd.log')}
server_id = ${role === 'primary' ? 1 : 2}
log_bin = mariadb-bin
binlog_format = ROW
gtid_strict_mode = ON
log_slave_updates = ON
${replica}${semi}session_track_system_variables = autocommit,character_set_client,character_set_connection,character_set_results,time_zone,last_gtid
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max_connections = 200
innodb_buffer_pool_size = 16M
innodb_log_file_size = 8M
innodb_log_buffer_size = 4M
innodb_flush_log_at_trx_commit = 2
sync_binlog = 0
key_buffer_size = 1M
aria_pagecache_buffer_size = 8M
query_cache_size = 0
performance_schema = OFF
`
}

/** Users and the `test` database, kept out of the binlog (as topology.sh's mdb_bootstrap_sql). */
const BOOTSTRAP = `SET SESSION sql_log_bin = 0;
DROP USER IF EXISTS ''@'localhost';
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '${REPL_USER}'@'%' IDENTIFIED BY '${REPL_PASSWORD}';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '${REPL_USER}'@'%';
CREATE DATABASE IF NOT EXISTS test;
CREATE USER IF NOT EXISTS '${APP_USER}'@'%' IDENTIFIED BY '${APP_PASSWORD}';
GRANT ALL PRIVILEGES ON test.* TO '${APP_USER}'@'%';
FLUSH PRIVILEGES;`

class PairServer implements PrivateMariadbServer {
  readonly port: number
  readonly url: string
  readonly appUrl: string
  readonly dir: string
  readonly #child: ChildProcess
  readonly #exited: Promise<void>

  constructor(dir: string, port: number, child: ChildProcess) {
    this.dir = dir
    this.port = port
    this.url = `mysql://root@127.0.0.1:${port}/test`
    this.appUrl = `mysql://${APP_USER}:${APP_PASSWORD}@127.0.0.1:${port}/test`
    this.#child = child
    live.add(child)
    this.#exited = new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve()
      else child.once('exit', () => resolve())
    }).then(() => {
      live.delete(child)
    })
  }

  get pid(): number {
    return this.#child.pid ?? -1
  }

  alive(): boolean {
    return this.#child.exitCode === null && this.#child.signalCode === null
  }

  signal(signal: NodeJS.Signals): void {
    if (this.alive()) this.#child.kill(signal)
  }

  async kill(): Promise<void> {
    if (this.alive()) {
      // A stopped process takes SIGKILL too; SIGCONT first keeps that obvious.
      this.#child.kill('SIGKILL')
    }
    await Promise.race([this.#exited, sleep(10_000)])
    if (this.alive())
      throw new Error(`mariadbd on port ${this.port} (pid ${this.pid}) survived SIGKILL`)
  }

  async logTail(): Promise<string> {
    const text = await readFile(join(this.dir, 'mariadbd.log'), 'utf8').catch(() => '')
    return text.split('\n').slice(-20).join('\n')
  }
}

async function startServer(
  root: string,
  role: 'primary' | 'replica',
  options: Required<PrivateMariadbPairOptions>,
  deadline: number,
): Promise<PairServer> {
  const dir = join(root, role)
  await mkdir(join(dir, 'data'), { recursive: true })
  await mkdir(join(dir, 'tmp'), { recursive: true })
  const port = await freePort()
  const config = join(dir, 'my.cnf')
  await writeFile(config, cnf(dir, role, port, options))
  await run(
    findBinary('mariadb-install-db'),
    [`--defaults-file=${config}`, '--auth-root-authentication-method=normal', '--skip-test-db'],
    Math.max(1000, deadline - Date.now()),
  ).catch(async (error: Error) => {
    const log = await readFile(join(dir, 'mariadbd.log'), 'utf8').catch(() => '')
    throw new Error(`${error.message.split('\n')[0]}\n${log.split('\n').slice(-15).join('\n')}`)
  })
  const child = spawn(findBinary('mariadbd'), [`--defaults-file=${config}`], {
    stdio: 'ignore',
    detached: false,
  })
  child.on('error', () => {})
  const server = new PairServer(dir, port, child)
  // Bounded start: until root connects on the socket (root@localhost is all a fresh datadir
  // has) and the bootstrap ran, or the process dies, or the deadline passes.
  for (;;) {
    if (!server.alive())
      throw new Error(`mariadbd ${role} exited during startup:\n${await server.logTail()}`)
    if (Date.now() > deadline) {
      await server.kill().catch(() => {})
      throw new Error(
        `mariadbd ${role} on port ${port} not accepting connections in time:\n${await server.logTail()}`,
      )
    }
    try {
      const connection = await connect({ socketPath: join(dir, 'mariadbd.sock') }, 1000)
      try {
        await connection.query(BOOTSTRAP)
      } finally {
        await end(connection)
      }
      return server
    } catch {
      await sleep(READY_POLL_MS)
    }
  }
}

/**
 * Starts a private MariaDB primary and GTID replica in a temporary folder on free ports, with
 * or without semi-synchronous replication, and waits (bounded) until the replica's threads
 * run (and, with semi-sync, until the primary counts it as a semi-sync client). Always clean
 * up with `close()`; a process that exits without it still SIGKILLs the servers.
 *
 * @example
 * ```ts
 * await using pair = await startPrivateMariadbPair({ semiSync: true })
 * const router = createShardRouter({ shards: [{ id: 's', primary: pair.primary.appUrl }] })
 * await pair.primary.kill()
 * const { primary } = await switchover({ primary: pair.primary.url, replica: pair.replica.url, planned: false })
 * await router.setPrimary('s', pair.replica.appUrl)
 * ```
 */
export async function startPrivateMariadbPair(
  options: PrivateMariadbPairOptions,
): Promise<PrivateMariadbPair> {
  const settings: Required<PrivateMariadbPairOptions> = {
    semiSync: options.semiSync,
    semiSyncTimeout: options.semiSyncTimeout ?? 1000,
    startTimeout: options.startTimeout ?? 60_000,
  }
  installExitHook()
  const deadline = Date.now() + settings.startTimeout
  const root = await mkdtemp(join(tmpdir(), 'ballast-mdb-'))
  const started: PairServer[] = []
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await Promise.all(started.map((s) => s.kill().catch(() => {})))
    await rm(root, { recursive: true, force: true })
  }
  try {
    const results = await Promise.allSettled([
      startServer(root, 'primary', settings, deadline),
      startServer(root, 'replica', settings, deadline),
    ])
    for (const r of results) if (r.status === 'fulfilled') started.push(r.value)
    for (const r of results) if (r.status === 'rejected') throw r.reason
    const [primary, replica] = started as [PairServer, PairServer]
    const connection = await connect(replica.url, 2000)
    try {
      await connection.query(
        `CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = ${primary.port}, MASTER_USER = '${REPL_USER}', MASTER_PASSWORD = '${REPL_PASSWORD}', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1; START SLAVE`,
      )
    } finally {
      await end(connection)
    }
    await waitReplicating(primary, replica, settings.semiSync, deadline)
    return {
      primary,
      replica,
      semiSync: settings.semiSync,
      dir: root,
      close,
      [Symbol.asyncDispose]: close,
    }
  } catch (error) {
    await close()
    throw error
  }
}

async function waitReplicating(
  primary: PairServer,
  replica: PairServer,
  semiSync: boolean,
  deadline: number,
): Promise<void> {
  const onReplica = await connect(replica.url, 2000)
  const onPrimary = await connect(primary.url, 2000)
  try {
    for (;;) {
      const [rows] = (await onReplica.query('SHOW SLAVE STATUS')) as unknown as [
        Array<Record<string, unknown>>,
      ]
      const status = rows[0]
      let ready = status?.Slave_IO_Running === 'Yes' && status?.Slave_SQL_Running === 'Yes'
      if (ready && semiSync) {
        const [clients] = (await onPrimary.query(
          "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'",
        )) as unknown as [Array<{ Value: string }>]
        ready = Number(clients[0]?.Value) >= 1
      }
      if (ready) return
      if (Date.now() > deadline) {
        throw new Error(
          `private replica did not start replicating in time (IO=${String(status?.Slave_IO_Running)} SQL=${String(status?.Slave_SQL_Running)} ${String(status?.Last_IO_Error ?? '')}${String(status?.Last_SQL_Error ?? '')})`,
        )
      }
      await sleep(READY_POLL_MS)
    }
  } finally {
    await end(onReplica)
    await end(onPrimary)
  }
}

/**
 * The switchover an operator or orchestrator runs on a MariaDB primary and its GTID replica
 * (any pair: a {@link startPrivateMariadbPair}'s or a shop's own), given administrator URLs:
 *
 * 1. planned only: `SET GLOBAL read_only = 1` on the old primary (writes of users without
 *    `READ_ONLY ADMIN` now fail with ER_OPTION_PREVENTS_STATEMENT), then read its
 *    `gtid_binlog_pos` and wait (`MASTER_GTID_WAIT`) until the replica has applied it;
 * 2. unplanned (the old primary is dead): wait (up to 2 s) for the replica's IO thread to
 *    notice, so it has read what was already on its way, start the SQL thread if it was
 *    stopped, and wait until it has applied everything the IO thread received
 *    (`Gtid_IO_Pos`): what the relay log holds is never thrown away;
 * 3. on the replica: `STOP SLAVE`, `RESET SLAVE ALL`, `SET GLOBAL read_only = 0`.
 *
 * Returns the new primary's URL; the caller then points its routers at it
 * (`router.setPrimary(shardId, url)` in `@ballast/sharding`). Bounded by `timeout`: on expiry
 * it throws and the replica is left as it was (still a replica, unless step 3 had begun).
 */
export async function switchover(options: SwitchoverOptions): Promise<SwitchoverResult> {
  const started = performance.now()
  const planned = options.planned ?? true
  const timeoutMs = options.timeout ?? 10_000
  const deadline = Date.now() + timeoutMs
  const left = () => Math.max(1, deadline - Date.now())
  let old: Connection | undefined
  let replica: Connection | undefined
  try {
    let oldPrimaryPosition: string | undefined
    replica = await connect(options.replica, Math.min(2000, left()))
    if (planned) {
      old = await connect(options.primary, Math.min(2000, left()))
      await old.query({ sql: 'SET GLOBAL read_only = 1', timeout: left() })
      const [rows] = (await old.query({
        sql: 'SELECT @@GLOBAL.gtid_binlog_pos AS p',
        timeout: left(),
      })) as unknown as [Array<{ p: string }>]
      oldPrimaryPosition = rows[0]?.p ?? ''
      await waitApplied(replica, oldPrimaryPosition, left)
    } else {
      // Let the IO thread read what it already received (a paused replica's socket buffer)
      // and notice the old primary is gone: until then Gtid_IO_Pos may not be final.
      const settleBy = Date.now() + Math.min(IO_SETTLE_MS, left())
      let status = await slaveStatus(replica, left)
      if (status === undefined)
        throw new Error('the server to promote is not a replica (empty SHOW SLAVE STATUS)')
      while (status?.Slave_IO_Running === 'Yes' && Date.now() < settleBy) {
        await sleep(READY_POLL_MS)
        status = await slaveStatus(replica, left)
      }
      if (status?.Slave_SQL_Running !== 'Yes')
        await replica.query({ sql: 'START SLAVE SQL_THREAD', timeout: left() })
      await waitApplied(replica, String(status?.Gtid_IO_Pos ?? ''), left)
    }
    await replica.query({
      sql: 'STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0',
      timeout: left(),
    })
    const [pos] = (await replica.query({
      sql: 'SELECT @@GLOBAL.gtid_binlog_pos AS p',
      timeout: left(),
    })) as unknown as [Array<{ p: string }>]
    return {
      primary: options.replica,
      planned,
      oldPrimaryPosition,
      position: pos[0]?.p ?? '',
      durationMs: performance.now() - started,
    }
  } finally {
    await end(old)
    await end(replica)
  }
}

async function slaveStatus(
  connection: Connection,
  left: () => number,
): Promise<Record<string, unknown> | undefined> {
  const [rows] = (await connection.query({
    sql: 'SHOW SLAVE STATUS',
    timeout: left(),
  })) as unknown as [Array<Record<string, unknown>>]
  return rows[0]
}

async function waitApplied(
  replica: Connection,
  position: string,
  left: () => number,
): Promise<void> {
  if (position === '') return
  const seconds = left() / 1000
  const [rows] = (await replica.query({
    sql: 'SELECT MASTER_GTID_WAIT(?, ?) AS w',
    values: [position, seconds],
    timeout: left() + 1000,
  })) as unknown as [Array<{ w: unknown }>]
  if (Number(rows[0]?.w) !== 0)
    throw new Error(`the replica did not apply ${position} within ${Math.round(seconds * 1000)} ms`)
}
