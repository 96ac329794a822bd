/**
 * The supervisor: finds the servers (environment, containers or local, through
 * `@ballast/testkit`), puts fault proxies in front of Redis, RabbitMQ and the replica (the
 * chaos switch), creates schemas and seed data, spawns every service instance as its own Node
 * process, restarts a crashed one with backoff, and stops everything cleanly.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { createFaultProxy, type FaultProxy, resolveServer } from '@ballast/testkit'
import amqp from 'amqplib'
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
 * ports from there at any time.
 */
export async function findFreeBasePort(from = 20_000, to = 32_000, span = 100): Promise<number> {
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

  const [redis, mysqlStd, primary, replica, rabbit, cluster] = await Promise.all([
    resolveServer('redis'),
    resolveServer('mysql'),
    resolveServer('mysql-primary'),
    resolveServer('mysql-replica'),
    resolveServer('amqp'),
    resolveServer('redis-cluster'),
  ])
  const proxies: Record<'redis' | 'amqp' | 'replica', FaultProxy> = {
    redis: await createFaultProxy({ host: redis.host, port: redis.port }),
    amqp: await createFaultProxy({ host: rabbit.host, port: rabbit.port }),
    replica: await createFaultProxy({ host: replica.host, port: replica.port }),
  }
  const replicaTarget = mysqlTarget(replica.url, `${o.ns}_shard_a`)
  const config: ShopConfig = {
    ns: o.ns,
    gatewayPort: o.basePort,
    controlPort: o.basePort + 1,
    prometheusPort: o.basePort + PROMETHEUS_PORT_OFFSET,
    supervisorMetricsPort: o.basePort + SUPERVISOR_METRICS_PORT_OFFSET,
    instances: layoutInstances(o.basePort, o.counts ?? DEFAULT_COUNTS),
    redisUrl: proxies.redis.url(redis.url),
    redisClusterNodes: [...cluster.nodes],
    amqpUrl: proxies.amqp.url(rabbit.url),
    catalogDb: mysqlTarget(mysqlStd.url, `${o.ns}_catalog`),
    shards: [
      {
        id: 'a',
        primary: mysqlTarget(primary.url, `${o.ns}_shard_a`),
        replica: { ...replicaTarget, host: proxies.replica.host, port: proxies.replica.port },
      },
      { id: 'b', primary: mysqlTarget(mysqlStd.url, `${o.ns}_shard_b`) },
    ],
    providerUrl: '',
    runDir: o.runDir,
    bench: o.bench === true,
    ...(o.degrader ? { degrader: o.degrader } : {}),
  }
  const provider = config.instances.find((i) => i.service === 'provider') as InstanceSpec
  config.providerUrl = `http://127.0.0.1:${provider.port}`

  log(`shop: creating schemas and seed data (namespace ${o.ns})`)
  const seed = await createSchemaAndSeed(config.catalogDb, config.shards, {
    products: o.seedProducts ?? 3000,
    users: o.seedUsers ?? 300,
    stock: o.stock ?? 100_000,
    adminPassword: secrets.adminPassword,
    seedPassword: secrets.seedPassword,
  })
  log(`shop: ${seed.products} products, ${seed.users} users${seed.seeded ? ' (seeded now)' : ''}`)

  // Every process exports its spans here (OTLP/HTTP JSON on the control port, see traces.ts).
  const traces = new TraceStore()
  const chaosState: Record<string, boolean> = Object.fromEntries(
    CHAOS_FAULTS.map((f) => [f, false]),
  )
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
    proc.on('message', (m: { type?: string }) => {
      if (m?.type === 'ready') c.info.state = 'up'
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
        const conn = await amqp.connect(rabbit.url)
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

  const shop: Shop = {
    config,
    url: `http://127.0.0.1:${config.gatewayPort}/`,
    seed,
    secrets,
    async chaos(fault, on) {
      chaosState[fault] = on
      switch (fault) {
        case 'catalog-instance':
          return shop.hold('catalog-1', on)
        case 'redis':
        case 'rabbitmq':
        case 'replica': {
          const p = proxies[fault === 'rabbitmq' ? 'amqp' : fault]
          if (on) {
            p.refuse()
            p.cut()
          } else p.restore()
          return
        }
        case 'payment-provider': {
          await fetch(`${config.providerUrl}/mode`, {
            method: 'POST',
            headers: controlHeaders(o.runDir),
            body: JSON.stringify({ mode: on ? 'fail' : 'ok' }),
          })
          return
        }
      }
    },
    async status() {
      return { processes: shop.processes(), chaos: { ...chaosState }, queues: await queueDepths() }
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
      await supervisorMetrics?.shutdown()
      control.closeAllConnections()
      await new Promise((r) => control.close(r))
      await Promise.all([...children.values()].map(stopChild))
      await amqpConn?.close().catch(() => {})
      for (const p of Object.values(proxies)) await p.close()
      if (opts.dropData) await dropDatabases(config.catalogDb, config.shards)
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
          res.end(JSON.stringify({ error: `unknown fault ${fault}` }))
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
    const deadline = Date.now() + 90_000
    await Promise.all(config.instances.map((i) => waitHealthy(i.port, deadline)))
  } catch (err) {
    await shop.stop()
    throw err
  }
  return shop
}
