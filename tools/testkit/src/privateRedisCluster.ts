import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { Redis } from 'ioredis'

/** How {@link startPrivateRedisCluster} builds its cluster. */
export interface PrivateRedisClusterOptions {
  /**
   * Number of masters; the 16384 slots are split evenly between them.
   * @default 3
   */
  masters?: number
  /**
   * Replicas of each master.
   * @default 1
   */
  replicasPerMaster?: number
  /**
   * `cluster-node-timeout` in milliseconds: how long a node may not answer before it is
   * marked failed (and, for a master, its replica is promoted).
   * @default 2000
   */
  nodeTimeout?: number
  /**
   * Milliseconds the whole start (processes, slots, replication, `cluster_state:ok` on every
   * node) may take before it fails with the nodes' log tails.
   * @default 30000
   */
  startTimeout?: number
  /**
   * Extra `redis-server` arguments for every node, e.g. `['--cluster-replica-validity-factor', '0']`.
   * @default []
   */
  serverArgs?: readonly string[]
}

/** The defaults of {@link PrivateRedisClusterOptions}. */
export const DEFAULT_PRIVATE_REDIS_CLUSTER_OPTIONS: Readonly<Required<PrivateRedisClusterOptions>> =
  Object.freeze({
    masters: 3,
    replicasPerMaster: 1,
    nodeTimeout: 2000,
    startTimeout: 30_000,
    serverArgs: [],
  })

/** One `redis-server` of a {@link PrivateRedisCluster}. */
export interface PrivateRedisNode {
  /** Always `127.0.0.1`. */
  readonly host: string
  /** Its client port (the cluster bus is on `port + 10000`). */
  readonly port: number
  /** Its cluster node id (40 hex characters). */
  readonly id: string
  /** Its data folder (holds `nodes.conf` and `redis.log`). */
  readonly dir: string
  /** Its process id while it runs (a restart gives a new one). */
  readonly pid: number | undefined
}

/** A node's place in the cluster as the cluster itself sees it (from `CLUSTER NODES`). */
export interface PrivateRedisNodeRole {
  /** The node. */
  node: PrivateRedisNode
  /** `'master'` or `'replica'`. */
  role: 'master' | 'replica'
  /** For a replica, the id of its master. */
  masterId: string | undefined
  /** The flags the asked node reports for it (`fail`, `fail?`, `myself`, ...). */
  flags: string[]
}

/** A Redis Cluster of this process's own `redis-server`s, for tests that kill, pause or fail over nodes. */
export interface PrivateRedisCluster {
  /** Every node, masters first in the order they were created (a failover changes roles, not this list). */
  readonly nodes: readonly PrivateRedisNode[]
  /** Seeds for an ioredis `Cluster`: every node's host and port (a new array each time). */
  readonly seeds: Array<{ host: string; port: number }>
  /** The node listening on `port` (or with node id `port`). */
  node(portOrId: number | string): PrivateRedisNode
  /**
   * Sends `signal` to a node's process. `SIGKILL` and `SIGTERM` wait until it has exited;
   * use {@link PrivateRedisCluster.restart} to bring it back.
   */
  kill(portOrId: number | string, signal?: NodeJS.Signals): Promise<void>
  /** `SIGSTOP`: the node stops answering anything (clients and the cluster bus) until resumed. */
  pause(portOrId: number | string): void
  /**
   * Waits until every replica of `master` has applied the replication stream up to the
   * master's offset when called (the offsets its replicas report to it); resolves with the
   * milliseconds it waited, rejects after `timeout` ms (default 10000).
   */
  waitReplicated(master: number | string, timeout?: number): Promise<number>
  /**
   * Makes `replica` lag: pauses it (`SIGSTOP`), then writes `bytes` of throwaway data to its
   * master (one key of the master's slots, overwritten, then deleted) so that the socket
   * buffers between them are full and what the master acknowledges next stays in the
   * master's memory. Pausing alone usually loses nothing on loopback: the kernel holds
   * megabytes of replication stream for the stopped replica, which it reads on `SIGCONT` even
   * after its master died (a replica already behind at the pause once lost all it had not
   * applied: call {@link PrivateRedisCluster.waitReplicated} first). Undo with {@link PrivateRedisCluster.resume}.
   */
  lagReplica(replica: number | string, bytes?: number): Promise<void>
  /** `SIGCONT` after {@link PrivateRedisCluster.pause}. */
  resume(portOrId: number | string): void
  /** Starts a killed node again on its port with its `nodes.conf` (it rejoins, as a replica if it was replaced). */
  restart(portOrId: number | string): Promise<void>
  /** One command on one node (a fresh connection, bounded by 2 s). */
  command(portOrId: number | string, ...args: Array<string | number>): Promise<unknown>
  /** Every node's role as seen by a running node (the first that answers, or `via`). */
  roles(via?: number | string): Promise<PrivateRedisNodeRole[]>
  /** The master that serves `key`'s slot now, as seen by a running node. */
  masterOf(key: string): Promise<PrivateRedisNode>
  /** The slot ranges (`[first, last]`, inclusive) a master serves now; empty for a replica. */
  slotsOf(master: number | string): Promise<Array<[number, number]>>
  /** The replicas of `master` now (an empty list when it has none). */
  replicasOf(master: number | string): Promise<PrivateRedisNode[]>
  /** The first replica of `master`; throws when it has none. */
  replicaOf(master: number | string): Promise<PrivateRedisNode>
  /**
   * Waits until `replica` is a master after its master was killed: it usually wins the
   * election by itself; if it has not within `timeout` ms (default 10000), for example because
   * it was paused and missed the failure detection, `CLUSTER FAILOVER TAKEOVER` makes it master
   * without a vote. Resolves with which of the two happened.
   */
  promote(replica: number | string, timeout?: number): Promise<'election' | 'takeover'>
  /**
   * Waits until every running, unpaused node reports `cluster_state:ok` with all slots
   * assigned, every replica's link to its master is up, and every node's view names each
   * replica as one (so `replicaOf()` answers from any node). Resolves with the milliseconds it
   * waited; rejects after `timeout` ms (default 20000) with the nodes' states.
   */
  waitHealthy(timeout?: number): Promise<number>
  /** The last lines of a node's log. */
  logTail(portOrId: number | string, lines?: number): string
  /** Kills every node (SIGKILL, also paused ones) and removes the temporary folder. Idempotent. */
  close(): Promise<void>
  /** {@link PrivateRedisCluster.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>
}

const CLUSTER_SLOTS = 16384
const COMMAND_TIMEOUT = 2000
const EXIT_TIMEOUT = 5000

/** The path of an executable, looked up like `scripts/topology.sh` does (`PATH`, then the sbin/bin folders). */
function findBin(name: string): string | undefined {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean),
    '/usr/sbin',
    '/usr/bin',
    '/usr/local/sbin',
    '/usr/local/bin',
  ]
  for (const dir of dirs) {
    const path = join(dir, name)
    if (existsSync(path)) return path
  }
  return undefined
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/**
 * A port whose cluster bus port (+10000) is free too: nodes on 10000-11999, so their bus ports
 * are 20000-21999, below the kernel's ephemeral range (32768+: no outgoing connection takes
 * either in the meantime) and below 22000, where the shop's tests and benchmarks put their
 * ports (`findFreeBasePort`): a shop that starts a private cluster must not find its bus ports
 * on the shop's own listeners.
 */
async function freePort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 10_000 + Math.floor(Math.random() * 2_000)
    if (taken.has(port) || taken.has(port + 10_000)) continue
    if ((await portFree(port)) && (await portFree(port + 10_000))) {
      taken.add(port)
      return port
    }
  }
  throw new Error(
    'no free port pair (port, port + 10000) found with the port between 10000 and 11999',
  )
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function tail(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

async function once(port: number, args: Array<string | number>): Promise<unknown> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: COMMAND_TIMEOUT,
    commandTimeout: COMMAND_TIMEOUT,
  })
  client.on('error', () => undefined)
  try {
    await client.connect()
    const [name, ...rest] = args
    return await client.call(String(name), ...rest.map(String))
  } finally {
    client.disconnect()
  }
}

interface NodeState {
  host: string
  port: number
  id: string
  dir: string
  pid: number | undefined
  process: ChildProcess | undefined
  exited: Promise<void> | undefined
  paused: boolean
}

/**
 * The ioredis `Cluster` options the packages' READMEs document to ride out a master's
 * promotion: a call to a dead master costs two redirections per `retryDelayOnFailover` (the
 * connection error, then the MOVED back to it from another node), so 32 × 400 ms wait ~6.4 s,
 * above node-timeout (2 s) + detection + election; the packages' own timeouts
 * ({@link RIDE_OUT_TIMEOUT}) sit above that. ioredis's defaults (16 redirections, 100 ms apart)
 * give up after ~1.2 s.
 */
export const RIDE_OUT_CLUSTER_OPTIONS = Object.freeze({
  retryDelayOnFailover: 400,
  retryDelayOnClusterDown: 400,
  maxRedirections: 32,
})

/** The packages' timeout (ms) that goes with {@link RIDE_OUT_CLUSTER_OPTIONS}. */
export const RIDE_OUT_TIMEOUT = 8000

/**
 * Starts a Redis Cluster of its own (`masters × (1 + replicasPerMaster)` `redis-server`
 * processes from the machine's binary, free ports, a temporary folder, no persistence) and
 * waits until it is healthy. For tests that kill or pause nodes: the shared cluster on
 * 7000–7005 serves other tests in parallel and must never be touched that way. Fails loudly,
 * with the log tail of the node at fault, when a node does not come up within
 * `startTimeout`. Every process is killed and the folder removed by `close()`, also when
 * the test process exits without calling it.
 *
 * @example
 * ```ts
 * const cluster = await startPrivateRedisCluster({ nodeTimeout: 2000 })
 * afterAll(() => cluster.close())
 * const client = new Cluster(cluster.seeds)
 * const master = await cluster.masterOf('user:1')
 * await cluster.kill(master.port)          // SIGKILL
 * await cluster.waitHealthy()              // its replica was promoted
 * ```
 */
export async function startPrivateRedisCluster(
  options: PrivateRedisClusterOptions = {},
): Promise<PrivateRedisCluster> {
  const o = { ...DEFAULT_PRIVATE_REDIS_CLUSTER_OPTIONS }
  for (const [key, value] of Object.entries(options))
    if (value !== undefined) (o as Record<string, unknown>)[key] = value
  if (!Number.isInteger(o.masters) || o.masters < 1 || o.masters > 16)
    throw new TypeError(`invalid option "masters": expected an integer 1..16, got ${o.masters}`)
  if (!Number.isInteger(o.replicasPerMaster) || o.replicasPerMaster < 0 || o.replicasPerMaster > 4)
    throw new TypeError(
      `invalid option "replicasPerMaster": expected an integer 0..4, got ${o.replicasPerMaster}`,
    )
  if (!Number.isInteger(o.nodeTimeout) || o.nodeTimeout < 100)
    throw new TypeError(
      `invalid option "nodeTimeout": expected an integer >= 100 (ms), got ${o.nodeTimeout}`,
    )
  const server = findBin('redis-server')
  if (server === undefined)
    throw new Error(
      'redis-server not found on PATH or in /usr/sbin, /usr/bin, /usr/local/sbin, /usr/local/bin (apt-get install redis-server)',
    )

  const root = mkdtempSync(join(tmpdir(), 'ballast-redis-cluster-'))
  const taken = new Set<number>()
  const states: NodeState[] = []
  let closed = false
  const deadline = Date.now() + o.startTimeout

  const killAll = (): void => {
    for (const state of states) {
      if (state.pid === undefined) continue
      try {
        process.kill(state.pid, 'SIGKILL')
      } catch {
        // already gone
      }
    }
  }
  // a test process that dies without close() must not leave servers behind
  const onExit = (): void => {
    killAll()
    rmSync(root, { recursive: true, force: true })
  }
  process.once('exit', onExit)

  const launch = async (state: NodeState, until: number): Promise<void> => {
    const child = spawn(
      server,
      [
        '--port',
        String(state.port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(state.dir, 'nodes.conf'),
        '--cluster-node-timeout',
        String(o.nodeTimeout),
        '--save',
        '',
        '--appendonly',
        'no',
        '--repl-diskless-sync-delay',
        '0',
        '--dir',
        state.dir,
        '--logfile',
        join(state.dir, 'redis.log'),
        ...o.serverArgs,
      ],
      { stdio: 'ignore' },
    )
    state.process = child
    state.pid = child.pid
    state.paused = false
    state.exited = new Promise((resolve) => child.once('exit', () => resolve()))
    child.once('exit', () => {
      if (state.process === child) {
        state.pid = undefined
        state.process = undefined
      }
    })
    child.on('error', () => undefined)
    const logFile = join(state.dir, 'redis.log')
    for (;;) {
      if (state.process !== child)
        throw new Error(
          `redis-server on 127.0.0.1:${state.port} exited at start; last lines of ${logFile}:\n${tail(logFile)}`,
        )
      try {
        if ((await once(state.port, ['PING'])) === 'PONG') return
      } catch {
        // not listening yet
      }
      if (Date.now() > until)
        throw new Error(
          `redis-server on 127.0.0.1:${state.port} did not answer PING within ${o.startTimeout} ms; last lines of ${logFile}:\n${tail(logFile)}`,
        )
      await sleep(50)
    }
  }

  const find = (portOrId: number | string): NodeState => {
    const state = states.find((s) => s.port === portOrId || s.id === portOrId)
    if (state === undefined) throw new Error(`no node ${portOrId} in this private cluster`)
    return state
  }
  const view = (state: NodeState): PrivateRedisNode => ({
    host: state.host,
    port: state.port,
    id: state.id,
    dir: state.dir,
    pid: state.pid,
  })

  const healthProblem = async (): Promise<string | undefined> => {
    const running = states.filter((s) => s.pid !== undefined && !s.paused)
    const replicas = new Set<string>()
    for (const state of running) {
      let info: string
      try {
        info = String(await once(state.port, ['CLUSTER', 'INFO']))
      } catch (error) {
        return `${state.port}: ${(error as Error).message}`
      }
      if (!info.includes('cluster_state:ok')) return `${state.port}: cluster_state not ok`
      if (!info.includes(`cluster_slots_assigned:${CLUSTER_SLOTS}`))
        return `${state.port}: not every slot assigned`
      if (!info.includes(`cluster_known_nodes:${states.length}`))
        return `${state.port}: does not know every node yet`
      const replication = String(await once(state.port, ['INFO', 'replication']))
      if (replication.includes('role:slave') && !replication.includes('master_link_status:up'))
        return `${state.port}: replica whose link to its master is down`
      if (replication.includes('role:slave')) replicas.add(state.id)
    }
    // Every running node's view names each replica as one (gossip spreads a new replica's role
    // over a few hundred ms after its link is up; replicaOf() reads one node's view).
    for (const state of running) {
      const nodes = String(await once(state.port, ['CLUSTER', 'NODES']))
      for (const id of replicas) {
        const line = nodes.split('\n').find((l) => l.startsWith(`${id} `))
        const [, , flags, masterId] = line?.split(' ') ?? []
        if (!flags?.split(',').includes('slave') || masterId === undefined || masterId === '-')
          return `${state.port}: does not see ${find(id).port} as a replica yet`
      }
    }
    return undefined
  }

  const waitHealthy = async (timeout = 20_000): Promise<number> => {
    const started = performance.now()
    let problem: string | undefined
    for (;;) {
      problem = await healthProblem()
      if (problem === undefined) return performance.now() - started
      if (performance.now() - started > timeout)
        throw new Error(`private Redis Cluster not healthy after ${timeout} ms (${problem})`)
      await sleep(50)
    }
  }

  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    process.off('exit', onExit)
    const exits = states.map((s) => s.exited)
    killAll()
    await Promise.race([Promise.all(exits), sleep(EXIT_TIMEOUT)])
    rmSync(root, { recursive: true, force: true })
  }

  try {
    const count = o.masters * (1 + o.replicasPerMaster)
    for (let i = 0; i < count; i++) {
      const port = await freePort(taken)
      const dir = join(root, String(port))
      mkdirSync(dir)
      const state: NodeState = {
        host: '127.0.0.1',
        port,
        id: '',
        dir,
        pid: undefined,
        process: undefined,
        exited: undefined,
        paused: false,
      }
      states.push(state)
    }
    await Promise.all(states.map((state) => launch(state, deadline)))
    for (const state of states) state.id = String(await once(state.port, ['CLUSTER', 'MYID']))

    // slots: an even split over the masters (the first `masters` nodes)
    const masters = states.slice(0, o.masters)
    for (const [i, master] of masters.entries()) {
      const first = Math.floor((i * CLUSTER_SLOTS) / o.masters)
      const last = Math.floor(((i + 1) * CLUSTER_SLOTS) / o.masters) - 1
      await once(master.port, ['CLUSTER', 'ADDSLOTSRANGE', first, last])
    }
    const [first] = states as [NodeState]
    for (const state of states.slice(1))
      await once(state.port, ['CLUSTER', 'MEET', '127.0.0.1', first.port])
    // a replica can only REPLICATE a master it knows
    for (const [i, replica] of states.slice(o.masters).entries()) {
      const master = masters[i % o.masters] as NodeState
      for (;;) {
        const nodes = String(await once(replica.port, ['CLUSTER', 'NODES']))
        if (nodes.includes(master.id)) break
        if (Date.now() > deadline)
          throw new Error(
            `node 127.0.0.1:${replica.port} did not learn of its master ${master.port} within ${o.startTimeout} ms`,
          )
        await sleep(50)
      }
      await once(replica.port, ['CLUSTER', 'REPLICATE', master.id])
    }
    await waitHealthy(Math.max(1000, deadline - Date.now()))
  } catch (error) {
    const tails = states
      .map((s) => `--- 127.0.0.1:${s.port} ---\n${tail(join(s.dir, 'redis.log'), 10)}`)
      .join('\n')
    await close()
    throw new Error(`private Redis Cluster did not start: ${(error as Error).message}\n${tails}`, {
      cause: error,
    })
  }

  const roles = async (via?: number | string): Promise<PrivateRedisNodeRole[]> => {
    const candidates =
      via === undefined ? states.filter((s) => s.pid !== undefined && !s.paused) : [find(via)]
    let lastError: unknown
    for (const asked of candidates) {
      let text: string
      try {
        text = String(await once(asked.port, ['CLUSTER', 'NODES']))
      } catch (error) {
        lastError = error
        continue
      }
      const result: PrivateRedisNodeRole[] = []
      for (const line of text.trim().split('\n')) {
        const [id, , flagText, masterId] = line.split(' ')
        const state = states.find((s) => s.id === id)
        if (state === undefined || flagText === undefined) continue
        const flags = flagText.split(',')
        result.push({
          node: view(state),
          role: flags.includes('master') ? 'master' : 'replica',
          masterId: masterId === '-' ? undefined : masterId,
          flags,
        })
      }
      return result
    }
    throw new Error('no node of the private cluster answered CLUSTER NODES', { cause: lastError })
  }

  const replicasOf = async (master: number | string): Promise<PrivateRedisNode[]> => {
    const id = find(master).id
    return (await roles())
      .filter((r) => r.role === 'replica' && r.masterId === id)
      .map((r) => r.node)
  }

  const cluster: PrivateRedisCluster = {
    get nodes() {
      return states.map(view)
    },
    get seeds() {
      return states.map((s) => ({ host: s.host, port: s.port }))
    },
    node: (portOrId) => view(find(portOrId)),
    async kill(portOrId, signal = 'SIGKILL') {
      const state = find(portOrId)
      if (state.pid === undefined) return
      const exited = state.exited
      process.kill(state.pid, signal)
      if (signal === 'SIGKILL' || signal === 'SIGTERM') {
        if (state.paused && signal === 'SIGTERM') process.kill(state.pid, 'SIGCONT')
        await Promise.race([exited, sleep(EXIT_TIMEOUT)])
        state.paused = false
      }
    },
    pause(portOrId) {
      const state = find(portOrId)
      if (state.pid === undefined) throw new Error(`node ${state.port} is not running`)
      process.kill(state.pid, 'SIGSTOP')
      state.paused = true
    },
    async waitReplicated(master, timeout = 10_000) {
      const port = find(master).port
      const started = performance.now()
      const info = async () => String(await once(port, ['INFO', 'replication']))
      const target = Number(/master_repl_offset:(\d+)/.exec(await info())?.[1])
      for (;;) {
        const text = await info()
        const offsets = [...text.matchAll(/^slave\d+:.*offset=(\d+)/gm)].map((m) => Number(m[1]))
        if (offsets.length > 0 && offsets.every((offset) => offset >= target))
          return performance.now() - started
        if (performance.now() - started > timeout)
          throw new Error(
            `replicas of ${port} did not reach offset ${target} within ${timeout} ms: ${offsets.join(', ')}`,
          )
        await sleep(20)
      }
    },
    async lagReplica(portOrId, bytes = 64 * 1024 * 1024) {
      const replica = find(portOrId)
      const role = (await roles()).find((r) => r.node.id === replica.id)
      if (role?.role !== 'replica' || role.masterId === undefined)
        throw new Error(`node ${replica.port} is not a replica`)
      const master = find(role.masterId)
      const ranges = await cluster.slotsOf(master.port)
      let key = ''
      for (let n = 0; key === ''; n++) {
        const slot = redisKeySlot(`ballast:lag:{${n}}`)
        if (ranges.some(([from, to]) => slot >= from && slot <= to)) key = `ballast:lag:{${n}}`
      }
      cluster.pause(replica.port)
      const client = new Redis({ host: master.host, port: master.port, lazyConnect: true })
      client.on('error', () => undefined)
      try {
        await client.connect()
        const chunk = Buffer.alloc(1024 * 1024, 120)
        for (let written = 0; written < bytes; written += chunk.length) await client.set(key, chunk)
        await client.del(key)
      } finally {
        client.disconnect()
      }
    },
    resume(portOrId) {
      const state = find(portOrId)
      if (state.pid === undefined) throw new Error(`node ${state.port} is not running`)
      process.kill(state.pid, 'SIGCONT')
      state.paused = false
    },
    async restart(portOrId) {
      const state = find(portOrId)
      if (state.pid !== undefined) throw new Error(`node ${state.port} is still running`)
      if (closed) throw new Error('the private cluster is closed')
      await launch(state, Date.now() + o.startTimeout)
    },
    command: (portOrId, ...args) => once(find(portOrId).port, args),
    roles,
    async masterOf(key) {
      const asked = states.find((s) => s.pid !== undefined && !s.paused)
      if (asked === undefined) throw new Error('no node of the private cluster is running')
      const slot = Number(await once(asked.port, ['CLUSTER', 'KEYSLOT', key]))
      let lastError: unknown
      for (const candidate of states.filter((s) => s.pid !== undefined && !s.paused)) {
        try {
          const ranges = (await once(candidate.port, ['CLUSTER', 'SLOTS'])) as Array<
            [number, number, [string, number, string], ...unknown[]]
          >
          for (const [from, to, [, port]] of ranges)
            if (slot >= from && slot <= to) return view(find(Number(port)))
          lastError = new Error(`slot ${slot} is not served (asked ${candidate.port})`)
        } catch (error) {
          lastError = error
        }
      }
      throw new Error(`no master found for "${key}" (slot ${slot})`, { cause: lastError })
    },
    async slotsOf(master) {
      const port = find(master).port
      const asked = states.find((s) => s.pid !== undefined && !s.paused)
      if (asked === undefined) throw new Error('no node of the private cluster is running')
      const ranges = (await once(asked.port, ['CLUSTER', 'SLOTS'])) as Array<
        [number, number, [string, number, string], ...unknown[]]
      >
      return ranges
        .filter(([, , [, owner]]) => Number(owner) === port)
        .map(([from, to]): [number, number] => [from, to])
    },
    replicasOf,
    async replicaOf(master) {
      const [replica] = await replicasOf(master)
      if (replica === undefined) throw new Error(`node ${find(master).port} has no replica`)
      return replica
    },
    async promote(replica, timeout = 10_000) {
      const port = find(replica).port
      const deadline = performance.now() + timeout
      while (performance.now() < deadline) {
        const roles = await cluster.roles()
        if (roles.find((r) => r.node.port === port)?.role === 'master') return 'election'
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      await cluster.command(port, 'CLUSTER', 'FAILOVER', 'TAKEOVER')
      return 'takeover'
    },
    waitHealthy,
    logTail: (portOrId, lines) => tail(join(find(portOrId).dir, 'redis.log'), lines),
    close,
    [Symbol.asyncDispose]: close,
  }
  return cluster
}

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let crc = i << 8
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
    table[i] = crc
  }
  return table
})()

/**
 * The Redis Cluster hash slot of `key` (CRC16/XMODEM of the key, or of its first non-empty
 * `{hash tag}`, modulo 16384), as `CLUSTER KEYSLOT` computes it, without a round trip.
 */
export function redisKeySlot(key: string): number {
  let bytes = Buffer.from(key)
  const open = bytes.indexOf(0x7b)
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1)
    if (close > open + 1) bytes = bytes.subarray(open + 1, close)
  }
  let crc = 0
  for (const byte of bytes)
    crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ byte) & 0xff] as number)
  return crc % CLUSTER_SLOTS
}
