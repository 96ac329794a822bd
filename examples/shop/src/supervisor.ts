/**
 * The supervisor: finds the servers (environment, containers or local, through
 * `@ballast/testkit`), puts fault proxies in front of Redis, each RabbitMQ cluster node and the
 * replica (the chaos switch), creates schemas and seed data, spawns every service instance as
 * its own Node process, restarts a crashed one with backoff, and stops everything cleanly. The
 * chaos switch also kills a RabbitMQ node (under the cluster's cross-process lock, see
 * `@ballast/testkit/rabbitmq-cluster`) and restarts it.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import {
  createFaultProxy,
  type FaultProxy,
  type PrivateMariadbPair,
  type PrivateMariadbServer,
  type PrivateRedisCluster,
  type ResolvedServer,
  resolveServer,
  startPrivateMariadbPair,
  startPrivateRedisCluster,
  switchover,
} from '@ballast/testkit'
import {
  acquireTopologyLock,
  killNode,
  type NodeNumber,
  nodeOfUrl,
  RABBITMQ_CLUSTER_LOCK,
  startCluster,
  type TopologyLock,
  withTopologyLock,
} from '@ballast/testkit/rabbitmq-cluster'
import amqp from 'amqplib'
import mysql from 'mysql2/promise'
import {
  type Counts,
  DEFAULT_COUNTS,
  type InstanceSpec,
  layoutInstances,
  type MysqlTarget,
  PROMETHEUS_PORT_OFFSET,
  SHOP_DIR,
  type ShopConfig,
  SUPERVISOR_METRICS_PORT_OFFSET,
} from './config.js'
import { controlHeaders, loadOrCreateControlToken, refuseControlRequest } from './control.js'
import { createSchemaAndSeed, dropDatabases, type SeedReport } from './data/schema.js'
import { installMetrics, type MetricsSetup } from './platform/metrics.js'
import { shopQueues } from './platform/mq.js'
import { type RunningPrometheus, startPrometheus } from './platform/prometheus.js'
import {
  countKeys,
  failBack,
  failOverSessionMaster,
  type RedisFailover,
} from './platform/redisFailover.js'
import { type ShopReshard, startShopReshard } from './platform/reshard.js'
import { SHOP_FENCE_DELAY_MS } from './platform/sharding.js'
import {
  isShardPrimaryAck,
  rejoinAsReplica,
  type ShardPrimaryAck,
  type ShardPrimaryMessage,
} from './platform/shardPrimary.js'
import { loadOrCreateSecrets } from './secrets.js'
import { CHAOS_FAULTS, type ChaosFault } from './services/gateway.js'
import { handleTraceRequest, TraceStore } from './traces.js'

export interface ShopOptions {
  /** Gateway port; the control port is `basePort + 1`, instances from `basePort + 10`. */
  basePort: number
  /** Prefix of databases, Redis keys and queues. */
  ns: string
  /** Secrets, pid file and logs. */
  runDir: string
  counts?: Counts
  seedProducts?: number
  seedUsers?: number
  stock?: number
  bench?: boolean
  /** Overload limits of the catalog's degrader (default: `DEFAULT_DEGRADER_SETTINGS`). */
  degrader?: ShopConfig['degrader']
  /**
   * Where sessions live: `'private'` (default), a Redis Cluster of the shop's own (3 masters, a
   * replica each, started and removed by the supervisor), whose master the "redis-failover"
   * fault SIGKILLs; `'shared'`, the topology's cluster on 7000-7005 that other tests use, which
   * the fault fails over gracefully (`CLUSTER FAILOVER`) and back, never killing a node.
   */
  redisCluster?: 'private' | 'shared'
  /**
   * Where shard b lives: `'standard'` (default), a schema on the standard MariaDB (3306) with no
   * replica; `'private'`, a MariaDB primary and GTID replica of the shop's own (testkit's
   * `startPrivateMariadbPair`, semi-synchronous, removed when the shop stops, so its data
   * lives as long as the shop), whose primary the "shard-primary" fault switches over.
   */
  shardPair?: 'standard' | 'private'
  /**
   * Resharding from the ops page: how long a move waits after it begins before it fences
   * (default and least `SHOP_FENCE_DELAY_MS`: the slot map's lease plus the routers' statement
   * timeout, and a second), and how long old copies stay on their source after the cut-over
   * (default 10 s: longer than the lease, so no router still reads them).
   */
  reshard?: { fenceDelayMs?: number; graceMs?: number }
  /** Drop the namespace's databases before creating them (a fresh start; a private shard pair starts empty). */
  freshData?: boolean
  /** Also echo each process's stderr to ours. */
  echo?: boolean
  onLog?: (line: string) => void
}

export interface ProcessInfo {
  name: string
  pid: number
  state: 'starting' | 'up' | 'restarting' | 'stopped' | 'exited'
  restarts: number
}

export interface Shop {
  config: ShopConfig
  url: string
  seed: SeedReport
  secrets: ReturnType<typeof loadOrCreateSecrets>
  chaos(fault: ChaosFault, on: boolean): Promise<void>
  status(): Promise<{
    processes: ProcessInfo[]
    chaos: Record<string, boolean>
    /** What the last switch of a cluster fault did, by fault (e.g. the node killed). */
    chaosDetails: Record<string, string>
    queues: { name: string; messages: number; consumers: number }[]
  }>
  /** Kills one instance without the chaos flag: the supervisor restarts it. */
  crash(name: string): void
  /** Stops an instance and keeps it stopped (`on`), or starts it again. */
  hold(name: string, on: boolean): Promise<void>
  processes(): ProcessInfo[]
  stop(options?: { dropData?: boolean }): Promise<void>
}

function mysqlTarget(url: string, database: string): MysqlTarget {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    database,
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Services whose processes route to the shards (each must follow a shard's new primary). */
const ROUTER_SERVICES: ReadonlySet<string> = new Set([
  'account',
  'cart',
  'order',
  'inventory',
  'payment',
  'delivery',
])

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer()
    probe.once('error', () => resolve(false))
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)))
  })
}

/**
 * A base port (a multiple of 100 in `[from, to)`) whose next `span` ports are all free, for
 * tests and benchmarks that start a shop beside others. Keep the range below the kernel's
 * ephemeral ports (32768 and up on Linux): fault proxies and other listeners on port 0 get
 * ports from there at any time. It starts at 22000: testkit's private Redis Clusters (the
 * shop's sessions in tests) listen on 10000-11999 and their cluster bus on 20000-21999.
 */
export async function findFreeBasePort(from = 22_000, to = 32_000, span = 100): Promise<number> {
  const slots = Math.floor((to - from) / 100)
  for (let attempt = 0; attempt < 40; attempt++) {
    const base = from + Math.floor(Math.random() * slots) * 100
    let free = true
    for (let p = base; p < base + span && free; p++) free = await portFree(p)
    if (free) return base
  }
  throw new Error(`no ${span} free ports found between ${from} and ${to}`)
}

async function waitHealthy(port: number, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/_internal/health`, {
        signal: AbortSignal.timeout(1000),
      })
      if (res.ok) return
    } catch {}
    await sleep(200)
  }
  throw new Error(`port ${port} did not become healthy in time`)
}

/** A request's JSON object body (at most 4 KiB), or undefined. */
async function readJsonObject(req: AsyncIterable<unknown>): Promise<object | undefined> {
  let body = ''
  for await (const chunk of req) {
    body += String(chunk)
    if (body.length > 4096) return undefined
  }
  try {
    const parsed: unknown = JSON.parse(body)
    return typeof parsed === 'object' && parsed !== null ? parsed : undefined
  } catch {
    return undefined
  }
}

interface Child {
  spec: InstanceSpec
  proc: ChildProcess | undefined
  info: ProcessInfo
  startedAt: number
  held: boolean
  timer: NodeJS.Timeout | undefined
}

export async function startShop(o: ShopOptions): Promise<Shop> {
  const log = o.onLog ?? ((line: string) => process.stdout.write(`${line}\n`))
  mkdirSync(join(o.runDir, 'logs'), { recursive: true })
  const secrets = loadOrCreateSecrets(o.runDir)
  const controlToken = loadOrCreateControlToken(o.runDir)

  const privateCluster = o.redisCluster !== 'shared'
  const [redis, mysqlStd, primary, replica, rabbit, sessionCluster] = await Promise.all([
    resolveServer('redis'),
    resolveServer('mysql'),
    resolveServer('mysql-primary'),
    resolveServer('mysql-replica'),
    resolveServer('amqp-cluster'),
    privateCluster
      ? startPrivateRedisCluster({ masters: 3, replicasPerMaster: 1, nodeTimeout: 2000 })
      : resolveServer('redis-cluster'),
  ])
  const ownCluster: PrivateRedisCluster | undefined =
    'seeds' in sessionCluster ? sessionCluster : undefined
  // Shard b on a pair of the shop's own: the app user (whom read_only stops, unlike root) gets
  // the shard's database; the grant replicates to the replica.
  const pair: PrivateMariadbPair | undefined =
    o.shardPair === 'private' ? await startPrivateMariadbPair({ semiSync: true }) : undefined
  const shardBDatabase = `${o.ns}_shard_b`
  const pairTarget = (server: PrivateMariadbServer): MysqlTarget => ({
    ...mysqlTarget(server.appUrl, shardBDatabase),
  })
  if (pair) {
    const root = await mysql.createConnection({ uri: pair.primary.url, connectTimeout: 2000 })
    try {
      await root.query(`GRANT ALL PRIVILEGES ON \`${shardBDatabase}\`.* TO 'app'@'%'`)
    } finally {
      await root.end()
    }
    // Resharding off shard b creates triggers (the mover's change log) as the app user, which a
    // server with a binary log allows a user without SUPER only with this on; both servers,
    // since the shard-primary switch swaps them.
    for (const server of [pair.primary, pair.replica]) {
      const conn = await mysql.createConnection({ uri: server.url, connectTimeout: 2000 })
      try {
        await conn.query('SET GLOBAL log_bin_trust_function_creators = 1')
      } finally {
        await conn.end()
      }
    }
  }
  const proxies: Record<'redis' | 'replica', FaultProxy> = {
    redis: await createFaultProxy({ host: redis.host, port: redis.port }),
    replica: await createFaultProxy({ host: replica.host, port: replica.port }),
  }
  // One proxy per RabbitMQ node: "rabbitmq" cuts them all; "rabbitmq-node" kills the node
  // behind the proxy that carries the most of the shop's connections.
  const amqpProxies: FaultProxy[] = []
  for (const node of rabbit.nodes)
    amqpProxies.push(await createFaultProxy({ host: node.host, port: node.port }))
  const replicaTarget = mysqlTarget(replica.url, `${o.ns}_shard_a`)
  const config: ShopConfig = {
    ns: o.ns,
    gatewayPort: o.basePort,
    controlPort: o.basePort + 1,
    prometheusPort: o.basePort + PROMETHEUS_PORT_OFFSET,
    supervisorMetricsPort: o.basePort + SUPERVISOR_METRICS_PORT_OFFSET,
    instances: layoutInstances(o.basePort, o.counts ?? DEFAULT_COUNTS),
    redisUrl: proxies.redis.url(redis.url),
    redisClusterNodes: ownCluster
      ? ownCluster.seeds
      : (sessionCluster as ResolvedServer).nodes.map((n) => ({ host: n.host, port: n.port })),
    redisClusterPrivate: ownCluster !== undefined,
    amqpUrls: rabbit.urls.map((url, i) => (amqpProxies[i] as FaultProxy).url(url)),
    catalogDb: mysqlTarget(mysqlStd.url, `${o.ns}_catalog`),
    shards: [
      {
        id: 'a',
        primary: mysqlTarget(primary.url, `${o.ns}_shard_a`),
        replica: { ...replicaTarget, host: proxies.replica.host, port: proxies.replica.port },
      },
      {
        id: 'b',
        primary: pair ? pairTarget(pair.primary) : mysqlTarget(mysqlStd.url, shardBDatabase),
      },
      // The third shard: a schema on the standard server, owning no slot until the ops page
      // reshards onto it; every router knows its servers from the start.
      { id: 'c', primary: mysqlTarget(mysqlStd.url, `${o.ns}_shard_c`) },
    ],
    // The slot map lives beside the catalog on the standard server.
    slotMapDb: mysqlTarget(mysqlStd.url, `${o.ns}_catalog`),
    providerUrl: '',
    runDir: o.runDir,
    bench: o.bench === true,
    ...(o.degrader ? { degrader: o.degrader } : {}),
  }
  const provider = config.instances.find((i) => i.service === 'provider') as InstanceSpec
  config.providerUrl = `http://127.0.0.1:${provider.port}`

  if (o.freshData) await dropDatabases(config.catalogDb, config.shards)
  log(`shop: creating schemas and seed data (namespace ${o.ns})`)
  const seed = await createSchemaAndSeed(config, {
    products: o.seedProducts ?? 3000,
    users: o.seedUsers ?? 300,
    stock: o.stock ?? 100_000,
    adminPassword: secrets.adminPassword,
    seedPassword: secrets.seedPassword,
  })
  log(`shop: ${seed.products} products, ${seed.users} users${seed.seeded ? ' (seeded now)' : ''}`)
  // Resharding (the ops page's "Add shard"), run here; a run left unfinished goes on.
  const reshard: ShopReshard = await startShopReshard({
    config,
    fenceDelayMs: Math.max(o.reshard?.fenceDelayMs ?? SHOP_FENCE_DELAY_MS, SHOP_FENCE_DELAY_MS),
    graceMs: o.reshard?.graceMs ?? 10_000,
    log,
  })

  // Every process exports its spans here (OTLP/HTTP JSON on the control port, see traces.ts).
  const traces = new TraceStore()
  const chaosState: Record<string, boolean> = Object.fromEntries(
    CHAOS_FAULTS.map((f) => [f, false]),
  )
  // What the last switch of a cluster fault did (which node), for the ops page and the tests.
  const chaosDetails: Record<string, string> = {}
  // shard-primary: the switches sent to the services, and who acknowledged which.
  let shardSeq = 0
  const shardAcks = new Map<number, (name: string, ack: ShardPrimaryAck) => void>()
  const children = new Map<string, Child>()
  let stopping = false
  const pidFile = join(o.runDir, 'shop.pid')
  const childrenFile = join(o.runDir, 'children.json')
  const writePids = () => {
    writeFileSync(
      childrenFile,
      JSON.stringify(
        [...children.values()]
          .filter((c) => c.proc?.pid)
          .map((c) => ({ name: c.spec.name, pid: c.proc?.pid })),
      ),
    )
  }
  writeFileSync(pidFile, `${process.pid}\n`)

  const spawnChild = (c: Child) => {
    const out = createWriteStream(join(o.runDir, 'logs', `${c.spec.name}.log`), { flags: 'a' })
    const proc = fork(join(SHOP_DIR, 'src', 'service.ts'), [], {
      cwd: SHOP_DIR,
      execArgv: ['--conditions=@ballast/source', '--import', 'tsx'],
      env: {
        ...process.env,
        SHOP_CONFIG: JSON.stringify(config),
        SHOP_INSTANCE: c.spec.name,
        NODE_OPTIONS: '',
      },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    })
    c.proc = proc
    c.startedAt = Date.now()
    c.info.pid = proc.pid ?? 0
    c.info.state = 'starting'
    proc.stdout?.pipe(out, { end: false })
    proc.stderr?.on('data', (d: Buffer) => {
      out.write(d)
      if (o.echo)
        for (const line of d.toString().split('\n'))
          if (line.trim()) log(`[${c.spec.name}] ${line}`)
    })
    const spawnedWith = JSON.stringify(config.shards)
    proc.on('message', (m: { type?: string }) => {
      if (isShardPrimaryAck(m)) {
        shardAcks.get(m.seq)?.(c.spec.name, m)
        return
      }
      if (m?.type === 'ready') {
        c.info.state = 'up'
        // Started before a shard-primary switch but with the old shard list: follow it now.
        if (spawnedWith !== JSON.stringify(config.shards) && shardSeq > 0)
          for (const shard of config.shards)
            proc.send({
              type: 'shard-primary',
              seq: shardSeq,
              shard: shard.id,
              primary: shard.primary,
            })
      }
    })
    proc.on('exit', (code, signal) => {
      out.end()
      c.proc = undefined
      if (stopping || c.held) {
        c.info.state = 'stopped'
        return
      }
      // Back off 250 ms, doubling to 5 s; a process that ran for 10 s starts the count again.
      if (Date.now() - c.startedAt > 10_000) c.info.restarts = 0
      const delay = Math.min(250 * 2 ** c.info.restarts, 5000)
      c.info.restarts++
      c.info.state = 'restarting'
      log(`shop: ${c.spec.name} exited (${signal ?? code}); restarting in ${delay} ms`)
      c.timer = setTimeout(() => {
        if (!stopping && !c.held) spawnChild(c)
      }, delay)
    })
    writePids()
  }

  for (const spec of config.instances) {
    const c: Child = {
      spec,
      proc: undefined,
      info: { name: spec.name, pid: 0, state: 'starting', restarts: 0 },
      startedAt: 0,
      held: false,
      timer: undefined,
    }
    children.set(spec.name, c)
    spawnChild(c)
  }

  let amqpConn: amqp.ChannelModel | undefined
  const queueDepths = async () => {
    const q = shopQueues(o.ns)
    const out: { name: string; messages: number; consumers: number }[] = []
    try {
      if (!amqpConn) {
        // Listeners once per connection, not per call (the ops page polls this).
        let conn: amqp.ChannelModel | undefined
        for (const url of rabbit.urls) {
          conn = await amqp.connect(url, { timeout: 2000 }).catch(() => undefined)
          if (conn) break
        }
        if (!conn) return out
        conn.on('error', () => {})
        conn.on('close', () => {
          if (amqpConn === conn) amqpConn = undefined
        })
        amqpConn = conn
      }
      const ch = await amqpConn.createChannel()
      ch.on('error', () => {})
      try {
        for (const name of [q.inventory, q.payment, q.delivery].flatMap((n) => [n, `${n}.dlq`])) {
          try {
            const r = await ch.checkQueue(name)
            out.push({ name, messages: r.messageCount, consumers: r.consumerCount })
          } catch {
            break
          }
        }
      } finally {
        await ch.close().catch(() => {})
      }
    } catch {}
    return out
  }

  // Metrics of the supervisor itself: the depth of every queue as the broker reports it (the
  // dead-letter queues included), read every second into `lastQueues` because an observable
  // instrument's callback cannot wait for the broker; and the processes' restarts.
  let supervisorMetrics: MetricsSetup | undefined
  let prometheus: RunningPrometheus | undefined
  let lastQueues: { name: string; messages: number; consumers: number }[] = []
  let queuePoll: NodeJS.Timeout | undefined
  const startMetrics = async () => {
    supervisorMetrics = await installMetrics({
      service: 'supervisor',
      instance: 'supervisor',
      port: config.supervisorMetricsPort,
      global: false,
    })
    const meter = supervisorMetrics.provider.getMeter('@ballast/shop')
    const messages = meter.createObservableGauge('shop.queue.messages', {
      description: 'Messages ready in the queue, as the broker reports them',
      unit: '{message}',
    })
    const consumers = meter.createObservableGauge('shop.queue.consumers', {
      description: 'Consumers attached to the queue',
      unit: '{consumer}',
    })
    const restarts = meter.createObservableCounter('shop.process.restarts', {
      description: 'Restarts of each shop process by the supervisor since its last 10 s of uptime',
      unit: '{restart}',
    })
    meter.addBatchObservableCallback(
      (r) => {
        for (const q of lastQueues) {
          r.observe(messages, q.messages, { 'messaging.destination.name': q.name })
          r.observe(consumers, q.consumers, { 'messaging.destination.name': q.name })
        }
        for (const c of children.values())
          r.observe(restarts, c.info.restarts, { 'service.instance.id': c.spec.name })
      },
      [messages, consumers, restarts],
    )
    let polling = false
    const poll = async () => {
      if (polling || stopping) return
      polling = true
      try {
        const q = await queueDepths()
        if (q.length > 0) lastQueues = q
      } finally {
        polling = false
      }
    }
    void poll()
    queuePoll = setInterval(() => void poll(), 1000)
    prometheus = await startPrometheus(config)
    log(`shop: prometheus at ${prometheus.url}`)
  }

  const stopChild = async (c: Child) => {
    if (c.timer) clearTimeout(c.timer)
    const proc = c.proc
    if (!proc) return
    const exited = new Promise<void>((r) => proc.once('exit', () => r()))
    proc.kill('SIGTERM')
    const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(t)
  }

  // The RabbitMQ node the chaos switch killed, and the cluster lock held until it runs again.
  let killedNode: { node: NodeNumber; lock: TopologyLock } | undefined
  const killRabbitNode = async () => {
    if (killedNode) return
    // Other test runs kill nodes of the same cluster: wait until none is down, and hold the
    // lock while ours is, so no one else takes a second node (two of three down: no quorum).
    const waitedFrom = Date.now()
    const lock = await acquireTopologyLock(RABBITMQ_CLUSTER_LOCK, {
      holder: `shop ${o.ns} chaos rabbitmq-node`,
      timeout: 120_000,
    })
    const lockWaitMs = Date.now() - waitedFrom
    let node: NodeNumber
    let open: number[]
    let busiest: number
    try {
      // The node most of the shop's connections are on (their proxy has them open); right
      // after the "rabbitmq" cut, or another run's fault, they may still be reconnecting: wait
      // a little for them (bounded).
      const deadline = Date.now() + 10_000
      open = amqpProxies.map((p) => p.stats().open)
      while (open.every((n) => n === 0) && Date.now() < deadline) {
        await sleep(200)
        open = amqpProxies.map((p) => p.stats().open)
      }
      busiest = open.indexOf(Math.max(...open))
      node = nodeOfUrl(rabbit.urls[busiest] as string)
      log(`shop: chaos: SIGKILL RabbitMQ node ${node} (${open[busiest]} shop connections on it)`)
      await killNode(node)
    } catch (err) {
      lock.release()
      throw err
    }
    killedNode = { node, lock }
    chaosDetails['rabbitmq-node'] =
      `node ${node} (${rabbit.urls[busiest]}) SIGKILLed with ${open[busiest]} shop connections on it (the cluster lock after ${lockWaitMs} ms)`
  }
  const restartRabbitNode = async () => {
    const killed = killedNode
    if (!killed) return
    try {
      // Starts whatever node is down and waits until the three see each other again.
      await startCluster()
      log(`shop: chaos: RabbitMQ node ${killed.node} restarted, the cluster is whole`)
      chaosDetails['rabbitmq-node'] = `node ${killed.node} restarted; the three nodes run`
      killedNode = undefined
    } finally {
      if (!killedNode) killed.lock.release()
    }
  }

  // The Redis Cluster failover the chaos switch made, undone by "off".
  let redisFailover: RedisFailover | undefined
  // On the shop's own cluster: the master SIGKILLed (its replica takes over after the
  // cluster's node timeout); "off" starts it again and it rejoins as a replica.
  let killedMaster: { port: number; at: number } | undefined
  const killSessionMaster = async (on: boolean, c: PrivateRedisCluster) => {
    if (on && !killedMaster) {
      let best: { port: number; keys: number } | undefined
      for (const r of await c.roles()) {
        if (r.role !== 'master') continue
        const keys = await countKeys(r.node, `${o.ns}:sess:*`).catch(() => 0)
        if (!best || keys > best.keys) best = { port: r.node.port, keys }
      }
      if (!best) throw new Error("the shop's Redis Cluster has no master")
      const victim = best
      await c.kill(victim.port, 'SIGKILL')
      const at = Date.now()
      killedMaster = { port: victim.port, at }
      chaosDetails['redis-failover'] =
        `master 127.0.0.1:${victim.port} SIGKILLed (${victim.keys} session keys); waiting for its replica to take over`
      log(`shop: chaos: ${chaosDetails['redis-failover']}`)
      // The promotion is the cluster's doing: note when every slot is served again.
      void c
        .waitHealthy(30_000)
        .then(() => {
          if (killedMaster?.at === at)
            chaosDetails['redis-failover'] =
              `master 127.0.0.1:${victim.port} SIGKILLed (${victim.keys} session keys); its replica took over, every slot served again ${Date.now() - at} ms after the kill`
        })
        .catch(() => {})
    } else if (!on && killedMaster) {
      const { port } = killedMaster
      await c.restart(port)
      await c.waitHealthy(30_000)
      killedMaster = undefined
      chaosDetails['redis-failover'] = `127.0.0.1:${port} restarted; it rejoined as a replica`
      log(`shop: chaos: Redis ${chaosDetails['redis-failover']}`)
    }
  }
  const failOverRedis = async (on: boolean) => {
    if (ownCluster) return killSessionMaster(on, ownCluster)
    // one failover of the shared cluster at a time (two shops, or a shop and a person)
    await withTopologyLock(
      'redis-cluster',
      async () => {
        if (on && !redisFailover) {
          redisFailover = await failOverSessionMaster(config.redisClusterNodes, `${o.ns}:sess:*`)
          const f = redisFailover
          chaosDetails['redis-failover'] =
            `${f.promoted.host}:${f.promoted.port} took over from ${f.demoted.host}:${f.demoted.port} (${f.sessionKeys} session keys) in ${f.tookMs} ms`
          log(`shop: chaos: Redis Cluster failover: ${chaosDetails['redis-failover']}`)
        } else if (!on && redisFailover) {
          const f = redisFailover
          const ms = await failBack(config.redisClusterNodes, f)
          redisFailover = undefined
          chaosDetails['redis-failover'] =
            `failed back: ${f.demoted.host}:${f.demoted.port} is master again (${ms} ms)`
          log(`shop: chaos: Redis Cluster ${chaosDetails['redis-failover']}`)
        }
      },
      { holder: `shop ${o.ns} chaos redis-failover`, timeout: 60_000 },
    )
  }

  // Shard b's pair as it is now (the switch swaps the two) and whether it is switched.
  let shardB = pair ? { primary: pair.primary, replica: pair.replica } : undefined
  let shardSwitched = false
  /** Tells every process that routes to shards to follow `shard`'s new primary; waits (bounded) for each. */
  const broadcastShardPrimary = async (shard: string, primary: MysqlTarget) => {
    const seq = ++shardSeq
    const message: ShardPrimaryMessage = { type: 'shard-primary', seq, shard, primary }
    const waiting = new Set<string>()
    const errors: string[] = []
    const done = new Promise<void>((resolve) => {
      shardAcks.set(seq, (name, ack) => {
        if (ack.error) errors.push(`${name}: ${ack.error}`)
        waiting.delete(name)
        if (waiting.size === 0) resolve()
      })
    })
    for (const c of children.values()) {
      if (!ROUTER_SERVICES.has(c.spec.service) || !c.proc?.connected) continue
      waiting.add(c.spec.name)
      c.proc.send(message)
    }
    if (waiting.size > 0) await Promise.race([done, sleep(15_000)])
    shardAcks.delete(seq)
    return {
      followed:
        [...children.values()].filter((c) => ROUTER_SERVICES.has(c.spec.service)).length -
        waiting.size,
      late: [...waiting],
      errors,
    }
  }
  /** The operator's switchover of shard b's pair, then every router follows, then the old primary rejoins as a replica. */
  const switchShardPrimary = async () => {
    // The resharder's movers write to the primaries they were given: one change at a time.
    if (await reshard.busy())
      throw new Error('shard-primary waits for the resharding in progress to finish (see /ops)')
    if (!shardB)
      throw new Error(
        "shard-primary needs a shard pair of the shop's own (SHOP_SHARD_PAIR=private)",
      )
    const { primary: from, replica: to } = shardB
    const result = await switchover({
      primary: from.url,
      replica: to.url,
      planned: true,
      timeout: 10_000,
    })
    const target = pairTarget(to)
    const spec = config.shards.find((x) => x.id === 'b') as (typeof config.shards)[number]
    spec.primary = target
    const followed = await broadcastShardPrimary('b', target)
    await rejoinAsReplica({ server: from.url, primary: to.url, semiSync: true })
    shardB = { primary: to, replica: from }
    shardSwitched = !shardSwitched
    chaosDetails['shard-primary'] =
      `shard b: 127.0.0.1:${to.port} promoted over 127.0.0.1:${from.port} in ${Math.round(result.durationMs)} ms (planned, semi-sync); ${followed.followed} routers followed${followed.late.length ? `, not yet: ${followed.late.join(' ')}` : ''}${followed.errors.length ? `; errors: ${followed.errors.join('; ')}` : ''}; 127.0.0.1:${from.port} replicates it`
    log(`shop: chaos: ${chaosDetails['shard-primary']}`)
  }

  const applyChaos = async (fault: ChaosFault, on: boolean): Promise<void> => {
    switch (fault) {
      case 'catalog-instance':
        return shop.hold('catalog-1', on)
      case 'redis':
      case 'rabbitmq':
      case 'replica': {
        for (const p of fault === 'rabbitmq' ? amqpProxies : [proxies[fault]]) {
          if (on) {
            p.refuse()
            p.cut()
          } else p.restore()
        }
        return
      }
      case 'rabbitmq-node':
        return on ? killRabbitNode() : restartRabbitNode()
      case 'redis-failover':
        return failOverRedis(on)
      case 'shard-primary':
        // on: switch to the replica; off: switch back the same way (the pair is a pair again after each)
        if (on !== shardSwitched) await switchShardPrimary()
        return
      case 'payment-provider': {
        await fetch(`${config.providerUrl}/mode`, {
          method: 'POST',
          headers: controlHeaders(o.runDir),
          body: JSON.stringify({ mode: on ? 'fail' : 'ok' }),
        })
        return
      }
    }
  }

  const shop: Shop = {
    config,
    url: `http://127.0.0.1:${config.gatewayPort}/`,
    seed,
    secrets,
    async chaos(fault, on) {
      const before = chaosState[fault] === true
      chaosState[fault] = on
      try {
        await applyChaos(fault, on)
      } catch (err) {
        // e.g. the cluster lock not had in time: the switch shows what is true
        if (fault === 'rabbitmq-node') chaosState[fault] = killedNode !== undefined
        else if (fault === 'shard-primary') chaosState[fault] = shardSwitched
        else if (fault === 'redis-failover')
          chaosState[fault] = redisFailover !== undefined || killedMaster !== undefined
        else chaosState[fault] = before
        throw err
      }
    },
    async status() {
      return {
        processes: shop.processes(),
        chaos: { ...chaosState },
        chaosDetails: { ...chaosDetails },
        queues: await queueDepths(),
      }
    },
    async hold(name, on) {
      const c = children.get(name)
      if (!c) throw new Error(`unknown instance ${name}`)
      c.held = on
      if (on) await stopChild(c)
      else if (!c.proc) {
        spawnChild(c)
        await waitHealthy(c.spec.port, Date.now() + 30_000)
      }
    },
    crash(name) {
      children.get(name)?.proc?.kill('SIGKILL')
    },
    processes: () => [...children.values()].map((c) => ({ ...c.info })),
    async stop(opts = {}) {
      if (stopping) return
      stopping = true
      if (queuePoll) clearInterval(queuePoll)
      await prometheus?.stop()
      await reshard.close()
      await supervisorMetrics?.shutdown()
      control.closeAllConnections()
      await new Promise((r) => control.close(r))
      await Promise.all([...children.values()].map(stopChild))
      await amqpConn?.close().catch(() => {})
      for (const p of [...Object.values(proxies), ...amqpProxies]) await p.close()
      // A node the chaos switch left down is started again (the cluster is shared).
      await restartRabbitNode().catch((err) => log(`shop: restarting RabbitMQ: ${err}`))
      if (ownCluster) await ownCluster.close()
      else await failOverRedis(false).catch((err) => log(`shop: failing Redis back: ${err}`))
      if (opts.dropData) await dropDatabases(config.catalogDb, config.shards)
      await pair?.close()
      rmSync(pidFile, { force: true })
      rmSync(childrenFile, { force: true })
    },
  }

  // The control port: the ops page's chaos switch and the CLI talk to the supervisor here,
  // with the run directory's token, JSON and a loopback Host (see control.ts).
  const control: Server = createServer(async (req, res) => {
    try {
      const refused = refuseControlRequest(req.method, req.headers, controlToken)
      if (refused) {
        res.statusCode = refused.status
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ error: refused.error }))
        req.resume()
        return
      }
      if (await handleTraceRequest(traces, req, res)) return
      if (req.method === 'GET' && req.url === '/status') {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify(await shop.status()))
        return
      }
      if (req.method === 'GET' && req.url === '/shards') {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify(await reshard.view()))
        return
      }
      if (req.method === 'POST' && req.url === '/reshard') {
        const parsed = await readJsonObject(req)
        if (!parsed) {
          res.statusCode = 400
          res.end(JSON.stringify({ error: 'the body is not a JSON object of at most 4 KiB' }))
          return
        }
        const { action, shard } = parsed as { action?: unknown; shard?: unknown }
        res.setHeader('content-type', 'application/json')
        try {
          if (action === 'add-shard' && typeof shard === 'string') await reshard.addShard(shard)
          else if (action === 'pause') await reshard.pause()
          else if (action === 'resume') await reshard.resume()
          else if (action === 'abort') await reshard.abort()
          else {
            res.statusCode = 400
            res.end(
              JSON.stringify({
                error: 'unknown action: add-shard (with shard), pause, resume or abort',
              }),
            )
            return
          }
        } catch (err) {
          // refused (a run in progress, a shard that owns slots) or failed to start: the page says why
          res.statusCode = 409
          res.end(JSON.stringify({ error: (err as Error).message }))
          return
        }
        res.end(JSON.stringify(await reshard.view()))
        return
      }
      if (req.method === 'POST' && req.url === '/chaos') {
        let body = ''
        for await (const chunk of req) {
          body += chunk
          if (body.length > 4096) {
            res.statusCode = 413
            res.end('{}')
            return
          }
        }
        let parsed: { fault?: unknown; on?: unknown }
        try {
          parsed = JSON.parse(body) as typeof parsed
        } catch {
          parsed = null as unknown as typeof parsed
        }
        if (typeof parsed !== 'object' || parsed === null) {
          res.statusCode = 400
          res.end(JSON.stringify({ error: 'the body is not a JSON object' }))
          return
        }
        const { fault, on } = parsed as { fault: ChaosFault; on: boolean }
        if (!(CHAOS_FAULTS as readonly string[]).includes(fault)) {
          res.statusCode = 400
          res.end(JSON.stringify({ error: `unknown fault $fault` }))
          return
        }
        await shop.chaos(fault, on === true)
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ fault, on }))
        return
      }
      res.statusCode = 404
      res.end('{}')
    } catch (err) {
      res.statusCode = 500
      res.end(JSON.stringify({ error: (err as Error).message }))
    }
  })
  await new Promise<void>((resolve, reject) => {
    control.once('error', reject)
    control.listen(config.controlPort, '127.0.0.1', () => resolve())
  })

  try {
    await startMetrics()
    // Bounded, with room for a machine that other test runs keep busy (load averages of 20-30
    // on 2 cores were seen): a dozen processes compiling TypeScript at start.
    const deadline = Date.now() + 180_000
    await Promise.all(config.instances.map((i) => waitHealthy(i.port, deadline)))
  } catch (err) {
    await shop.stop()
    throw err
  }
  return shop
}
