/**
 * What telemetry costs lb's hot paths (issue #17), under the four setups of bench/telemetry.ts
 * in one run (no SDK, an SDK with metrics only, traces sampled at 100% and at 1%):
 *
 * - `Balancer.pick()` (16 endpoints, peak-EWMA and round-robin): pick makes no telemetry call
 *   (the per-endpoint counters are read when the SDK collects), so every setup should match.
 * - A proxied request (GET, small JSON body) through `createProxy` on loopback: with an SDK it
 *   records `http.server.request.duration` (and with `clientRequestDuration: true`, the row
 *   "metrics + client duration", `http.client.request.duration` per attempt) and, when
 *   sampled, a SERVER span and a CLIENT span whose traceparent goes upstream. The proxy runs in
 *   a child process per setup, all setups at once with the requests interleaved across them,
 *   and each reports its own CPU time (process.cpuUsage) over the same window, so the CPU per
 *   request is the proxy's alone and the machine's noise falls on every setup alike; the
 *   client (node:http, this process) and the two backends (another process) are shared.
 *
 * - The telemetry work of one proxied request, alone and in this process: what the proxy's own
 *   subscriber does on the four channel messages of a request with one attempt (start and end
 *   of each), with the request and response objects faked. On a machine as noisy as the shared
 *   one these figures were taken on, the end-to-end CPU per request varies by more than the
 *   telemetry costs; this table gives that cost precisely, to set against the CPU per request.
 *
 * With `LB_BEFORE` set to the `src/index.ts` of a checkout of the code before telemetry, a
 * `before` row runs that code in the same run, so "off" can be compared with it:
 *
 *   git worktree add /tmp/lb-before 45c7c6f~1
 *   ln -s "$PWD/packages/lb/node_modules" /tmp/lb-before/packages/lb/node_modules
 *   LB_BEFORE=/tmp/lb-before/packages/lb/src/index.ts \
 *     node --expose-gc --conditions=@ballast/source --import tsx bench/lb/telemetry.bench.ts
 *
 * Rounds interleave the setups; the tables give medians over the rounds.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { once } from 'node:events'
import { Agent, createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import * as lb from '@ballast/lb'
import {
  attemptChannel,
  isLive,
  ProxyTelemetry,
  requestChannel,
  type ServedRequest,
} from '../../packages/lb/src/internal/proxy/telemetry.js'
import { fmt, isSmoke, report } from '../harness.js'
import { TELEMETRY_MODES, type TelemetryMode, telemetryMode } from '../telemetry.js'
import { cpuNsPerOp } from './cpuTime.js'

type Lb = typeof lb
/** The proxy with metrics and its `clientRequestDuration` option on (off by default). */
const CLIENT_DURATION = 'metrics + client duration'
type Setup = 'before' | TelemetryMode['name'] | typeof CLIENT_DURATION

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.LB_BENCH_ROUNDS ?? 3)
const REQUESTS = SMOKE ? 50 : Number(process.env.LB_BENCH_REQUESTS ?? 15_000)
const CONCURRENCIES = [1, 32] as const
const BEFORE = process.env.LB_BEFORE
const SETUPS: ('before' | TelemetryMode['name'])[] = [
  ...(BEFORE === undefined ? [] : (['before'] as const)),
  ...TELEMETRY_MODES,
]
/** The proxy also runs with metrics and `clientRequestDuration: true`, beside `metrics`. */
const PROXY_SETUPS: Setup[] = SETUPS.flatMap((s): Setup[] =>
  s === 'metrics' ? [s, CLIENT_DURATION] : [s],
)
/** `LB_BENCH_ONLY=proxy` skips the work and pick tables (a quicker loop), `work` the proxy table. */
const ONLY_PROXY = process.env.LB_BENCH_ONLY === 'proxy'
const ONLY_WORK = process.env.LB_BENCH_ONLY === 'work'
const self = fileURLToPath(import.meta.url)

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

async function load(setup: Setup): Promise<Lb> {
  return setup === 'before' ? ((await import(BEFORE!)) as Lb) : lb
}

// ---- child roles ------------------------------------------------------------------------------

/** Two backends answering a small JSON body, in a process of their own. */
async function serveBackends(): Promise<void> {
  const body = JSON.stringify({ ok: true, items: [1, 2, 3], name: 'telemetry bench' })
  const ports: number[] = []
  for (let i = 0; i < 2; i++) {
    const server = createServer((req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
      res.end(body)
    })
    server.keepAliveTimeout = 60_000
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    ports.push((server.address() as AddressInfo).port)
  }
  process.send!({ ports })
  process.on('message', (m) => {
    if (m === 'stop') process.exit(0)
  })
}

/** The proxy under one setup; answers 'cpu' with its CPU time so far (µs). */
async function serveProxy(setup: Setup, targets: string[]): Promise<void> {
  const { createProxy } = await load(setup)
  const mode =
    setup === 'before' ? undefined : telemetryMode(setup === CLIENT_DURATION ? 'metrics' : setup)
  const proxy = createProxy({
    routes: [{ upstream: targets }],
    ...(mode?.options ?? {}),
    ...(setup === CLIENT_DURATION ? { clientRequestDuration: true } : {}),
  })
  // The client's keep-alive sockets can sit idle for seconds on a loaded machine: a proxy that
  // closed one at node's 5 s default while the client reused it failed a run with ECONNRESET.
  proxy.server.keepAliveTimeout = 60_000
  const { port } = await proxy.listen(0, '127.0.0.1')
  process.send!({ port })
  process.on('message', async (m) => {
    if (m === 'cpu') {
      const cpu = process.cpuUsage()
      process.send!({ cpu: cpu.user + cpu.system })
    } else if (m === 'stop') {
      await proxy.close()
      await mode?.shutdown()
      process.exit(0)
    }
  })
}

// ---- the run ----------------------------------------------------------------------------------

interface Child {
  child: ChildProcess
  message: Record<string, unknown>
}

async function start(env: Record<string, string>): Promise<Child> {
  const child = fork(self, [], {
    execArgv: process.execArgv,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const message = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Record<string, unknown>))
    child.once('exit', (code) => reject(new Error(`bench child exited with ${code}`)))
  })
  return { child, message }
}

async function ask(child: ChildProcess, what: string): Promise<Record<string, unknown>> {
  const reply = once(child, 'message')
  child.send(what)
  return (await reply)[0] as Record<string, unknown>
}

async function stop(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit')
  child.send('stop')
  await exited
}

interface ProxySample {
  p50: number
  p99: number
  /** The proxy process's CPU per request, µs. */
  cpu: number
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN

/**
 * One round: a proxy process per setup, all running at once, and the requests interleaved
 * across them (request i goes to setup i mod n, `concurrency` in flight per proxy). Each
 * process's CPU is read over the same window, so the machine's noise (other processes, CPU
 * frequency) falls on every setup alike: on the shared 2-core machine, one setup run after
 * another drifted by ±10% between two runs of the same code.
 */
async function measureProxies(
  setups: Setup[],
  targets: string[],
  concurrency: number,
): Promise<Map<Setup, ProxySample>> {
  const children = await Promise.all(
    setups.map((setup) =>
      start({
        LB_TELEMETRY_ROLE: 'proxy',
        LB_TELEMETRY_SETUP: setup,
        LB_TELEMETRY_TARGETS: targets.join(','),
      }),
    ),
  )
  const agents = setups.map(() => new Agent({ keepAlive: true, maxSockets: concurrency }))
  try {
    const get = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const port = children[i]!.message.port as number
        const req = httpRequest(
          { host: '127.0.0.1', port, path: '/api/items', agent: agents[i] },
          (res) => {
            res.resume()
            res.once('end', resolve)
            res.once('error', reject)
          },
        )
        req.once('error', reject)
        req.end()
      })
    const n = setups.length
    for (let i = 0; i < (SMOKE ? 5 : 2000) * n; i++) await get(i % n) // JIT, connections
    const cpu = () => Promise.all(children.map(({ child }) => ask(child, 'cpu')))
    const before = await cpu()
    const latencies: number[][] = setups.map(() => [])
    let next = 0
    await Promise.all(
      Array.from({ length: concurrency * n }, async () => {
        while (next < REQUESTS * n) {
          const i = next++ % n
          const t = performance.now()
          await get(i)
          latencies[i]!.push((performance.now() - t) * 1000)
        }
      }),
    )
    const after = await cpu()
    return new Map(
      setups.map((setup, i) => {
        const sorted = latencies[i]!.sort((a, b) => a - b)
        return [
          setup,
          {
            p50: percentile(sorted, 0.5),
            p99: percentile(sorted, 0.99),
            cpu: ((after[i]!.cpu as number) - (before[i]!.cpu as number)) / REQUESTS,
          },
        ]
      }),
    )
  } finally {
    for (const agent of agents) agent.destroy()
    await Promise.all(children.map(({ child }) => stop(child)))
  }
}

async function pickCosts(): Promise<Map<string, number[]>> {
  const endpoints = Array.from({ length: 16 }, (_, i) => ({
    id: `http://10.0.0.${i}:8080`,
    weight: 1 + (i % 3),
  }))
  const results = new Map<string, number[]>()
  for (let round = 0; round < ROUNDS; round++) {
    for (const setup of SETUPS) {
      const { createBalancer } = await load(setup)
      const mode = setup === 'before' ? undefined : telemetryMode(setup)
      for (const strategy of ['peak-ewma', 'round-robin'] as const) {
        const balancer = createBalancer({ strategy, endpoints, ...(mode?.options ?? {}) })
        for (const e of balancer.endpoints().slice(0, 5)) balancer.begin(e)
        const ns = cpuNsPerOp(() => balancer.pick(), SMOKE ? 1000 : 1_000_000, SMOKE ? 1 : 5)
        const key = `${strategy}|${setup}`
        results.set(key, [...(results.get(key) ?? []), ns])
        await balancer.close()
      }
      await mode?.shutdown()
    }
  }
  return results
}

/**
 * CPU ns of the telemetry work of one request with one attempt, as the proxy does it: one
 * `hasSubscribers` check without an SDK, else the four messages to its own subscriber.
 */
async function telemetryWorkCosts(): Promise<Map<string, number[]>> {
  const { metrics, trace } = await import('@opentelemetry/api')
  const proxy = {}
  const endpoint = { id: 'http://127.0.0.1:8080', value: 'http://127.0.0.1:8080' }
  const req = {
    method: 'GET',
    headers: { host: 'shop.test', accept: '*/*', 'user-agent': 'bench' },
    socket: {},
  }
  const res = { headersSent: true, statusCode: 200, writableFinished: true }
  const headers = ['host', 'shop.test', 'accept', '*/*', 'x-request-id', 'a1b2c3']
  const results = new Map<string, number[]>()
  const once = () => {
    if (!requestChannel.hasSubscribers) return
    const served: ServedRequest = {
      proxy,
      req: req as never,
      res: res as never,
      route: undefined,
      host: undefined,
      error: undefined,
      startedAt: 0,
      span: undefined,
      traceContext: undefined,
      unsampledHeaders: undefined,
    }
    requestChannel.start.publish(served)
    served.route = '*/'
    const attempt = {
      ctx: { served, method: 'GET', headers, tried: [endpoint], route: { name: '*/' } },
      endpoint,
      status: undefined as number | undefined,
      error: undefined,
      headers: undefined,
      span: undefined,
      sentAt: 0,
    }
    if (attemptChannel.hasSubscribers) attemptChannel.start.publish(attempt as never)
    attempt.status = 200
    attemptChannel.asyncEnd.publish(attempt as never)
    requestChannel.asyncEnd.publish(served)
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const setup of TELEMETRY_MODES) {
      const mode = telemetryMode(setup)
      const meter = (mode.options.meterProvider ?? metrics.getMeterProvider()).getMeter(
        '@ballast/lb',
      )
      const tracerProvider = mode.options.tracerProvider ?? trace.getTracerProvider()
      const live = isLive(meter, tracerProvider)
      const telemetry =
        live.metrics || live.traces
          ? new ProxyTelemetry(
              proxy,
              { meter, tracer: tracerProvider.getTracer('@ballast/lb') },
              { traced: live.traces, clientRequestDuration: false },
            )
          : undefined
      const ns = cpuNsPerOp(once, SMOKE ? 100 : 200_000, SMOKE ? 1 : 5)
      results.set(setup, [...(results.get(setup) ?? []), ns])
      telemetry?.close()
      await mode.shutdown()
    }
  }
  return results
}

async function main(): Promise<void> {
  if (!ONLY_PROXY) await workAndPickTables()
  if (!ONLY_WORK) await proxyTable()
}

async function workAndPickTables(): Promise<void> {
  const work = await telemetryWorkCosts()
  report({
    package: 'lb',
    name: 'telemetry-work',
    title:
      'The proxy’s telemetry work for one request with one attempt (its subscriber on the four channel messages), CPU ns',
    columns: ['setup', 'CPU ns / request'],
    rows: TELEMETRY_MODES.map((setup) => [setup, fmt(median(work.get(setup)!))]),
    notes: [
      `Process CPU time over 200k requests, median of 5, then median of ${ROUNDS} rounds. "off" is the one hasSubscribers check a proxy makes without an SDK. Request and response objects are faked; the request carries no traceparent, so "traces 1%" samples 1% of roots.`,
    ],
    data: Object.fromEntries(TELEMETRY_MODES.map((s) => [s, median(work.get(s)!)])),
  })

  const picks = await pickCosts()
  const pickRows: (string | number)[][] = []
  const pickData: Record<string, number> = {}
  for (const strategy of ['peak-ewma', 'round-robin']) {
    const off = median(picks.get(`${strategy}|off`)!)
    for (const setup of SETUPS) {
      const ns = median(picks.get(`${strategy}|${setup}`)!)
      pickData[`${strategy}|${setup}`] = ns
      pickRows.push([
        strategy,
        setup,
        fmt(ns),
        setup === 'off' ? '' : `${(((ns - off) / off) * 100).toFixed(1)}%`,
      ])
    }
  }
  report({
    package: 'lb',
    name: 'telemetry-pick',
    title: 'Balancer.pick() (16 endpoints) under each telemetry setup: CPU ns per pick',
    columns: ['strategy', 'setup', 'CPU ns / pick', 'vs off'],
    rows: pickRows,
    notes: [
      `Process CPU time over 1M picks, median of 5, then median of ${ROUNDS} rounds with the setups interleaved.${BEFORE === undefined ? '' : ' "before" is the code before telemetry (LB_BEFORE).'}`,
    ],
    data: pickData,
  })
}

async function proxyTable(): Promise<void> {
  const backends = await start({ LB_TELEMETRY_ROLE: 'backends' })
  const targets = (backends.message.ports as number[]).map((p) => `http://127.0.0.1:${p}`)
  try {
    const samples = new Map<string, ProxySample[]>()
    for (let round = 0; round < ROUNDS; round++) {
      for (const concurrency of CONCURRENCIES) {
        const measured = await measureProxies(PROXY_SETUPS, targets, concurrency)
        for (const [setup, sample] of measured) {
          const key = `${setup}|${concurrency}`
          samples.set(key, [...(samples.get(key) ?? []), sample])
        }
      }
    }
    const rows: (string | number)[][] = []
    const data: Record<string, ProxySample & { cpuVsOff: number }> = {}
    for (const concurrency of CONCURRENCIES) {
      const off = samples.get(`off|${concurrency}`)!
      for (const setup of PROXY_SETUPS) {
        const list = samples.get(`${setup}|${concurrency}`)!
        // Each round's CPU against off's in the same round (they ran side by side), then the median.
        const cpuVsOff = median(list.map((s, round) => s.cpu / off[round]!.cpu - 1))
        const row = {
          p50: median(list.map((s) => s.p50)),
          p99: median(list.map((s) => s.p99)),
          cpu: median(list.map((s) => s.cpu)),
          cpuVsOff,
        }
        data[`${setup}|${concurrency}`] = row
        rows.push([
          setup,
          concurrency,
          fmt(row.p50),
          fmt(row.p99),
          fmt(row.cpu),
          setup === 'off' ? '' : `${(cpuVsOff * 100).toFixed(1)}%`,
        ])
      }
    }
    report({
      package: 'lb',
      name: 'telemetry-proxy',
      title: 'A proxied GET (createProxy on loopback, two backends) under each telemetry setup',
      columns: ['setup', 'concurrency', 'p50 µs', 'p99 µs', 'proxy CPU µs/req', 'CPU vs off'],
      rows,
      notes: [
        `${ROUNDS} rounds; in each, one fresh proxy process per setup, all running at once, and ${REQUESTS} requests per setup interleaved across them (concurrency per proxy). The CPU is each proxy process's own (process.cpuUsage) over the same window; "CPU vs off" is the median over the rounds of each round's ratio. p50 and p99 are medians over the rounds.${BEFORE === undefined ? '' : ' "before" is the code before telemetry (LB_BEFORE).'}`,
      ],
      data,
    })
  } finally {
    await stop(backends.child)
  }
}

const role = process.env.LB_TELEMETRY_ROLE
if (role === 'backends') await serveBackends()
else if (role === 'proxy') {
  await serveProxy(
    process.env.LB_TELEMETRY_SETUP as Setup,
    (process.env.LB_TELEMETRY_TARGETS ?? '').split(','),
  )
} else await main()
