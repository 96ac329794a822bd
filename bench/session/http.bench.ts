/**
 * Sessions over real HTTP, ours against express-session + connect-redis on Express and
 * @fastify/session + connect-redis on Fastify, plus ours on plain node:http: requests per
 * second and latency with autocannon, and Redis commands per request from Redis's own
 * INFO commandstats, for a request that leaves the session unchanged and one that changes a
 * field. Same Redis (a private redis-server), same machine, same run; each server runs in its
 * own child process, rounds interleave the contestants, and the table gives medians.
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/session/http.bench.ts
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { fmt, isSmoke, report } from '../harness.js'
import { CONTESTANTS, type Contestant } from './contestants.js'
import { type PrivateRedis, startPrivateRedis } from './redisServer.js'

const SMOKE = isSmoke()
const ROUNDS = SMOKE ? 1 : Number(process.env.SESSION_BENCH_ROUNDS ?? 7)
const SECONDS = SMOKE ? 1 : Number(process.env.SESSION_BENCH_SECONDS ?? 4)
// SESSION_BENCH_ONLY=express (a substring) runs only the matching contestants.
const ONLY = process.env.SESSION_BENCH_ONLY
const CONNECTIONS = SMOKE ? 4 : 32
const SCENARIOS = ['read', 'write'] as const
type Scenario = (typeof SCENARIOS)[number]

interface Sample {
  rps: number
  p50: number
  p99: number
  requests: number
  roundTrips: number
  commands: number
  /** Server process CPU per request, µs. */
  appCpu: number
  /** Redis CPU per request, µs. */
  redisCpu: number
  errors: number
}

const contestantsFile = fileURLToPath(new URL('./contestants.ts', import.meta.url))

async function startChild(index: number, redisPort: number) {
  const child = fork(contestantsFile, [], {
    execArgv: process.execArgv,
    env: {
      ...process.env,
      SESSION_BENCH_SERVE: String(index),
      SESSION_BENCH_REDIS_PORT: String(redisPort),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m) => resolve((m as { port: number }).port))
    child.once('exit', (code) => reject(new Error(`server ${index} exited with ${code}`)))
  })
  return {
    port,
    cpu: () =>
      new Promise<number>((resolve) => {
        const onMessage = (m: unknown) => {
          if (typeof m === 'object' && m !== null && 'cpu' in m) {
            child.off('message', onMessage)
            resolve((m as { cpu: number }).cpu)
          }
        }
        child.on('message', onMessage)
        child.send('cpu')
      }),
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.send('stop')
      await exited
    },
  }
}

async function login(port: number, baseline: boolean): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/login`)
  const cookie = response.headers.getSetCookie()[0]?.split(';')[0]
  if (baseline) return 'none=1'
  if (cookie === undefined) throw new Error('login set no cookie')
  return cookie
}

/** Client round trips: every command, except those Redis ran inside our EVALSHA scripts. */
function diff(before: Map<string, number>, after: Map<string, number>) {
  let commands = 0
  let scripts = 0
  for (const [name, calls] of after) {
    if (name === 'info' || name.startsWith('client') || name.startsWith('config')) continue
    const n = calls - (before.get(name) ?? 0)
    commands += n
    if (name === 'evalsha' || name === 'eval') scripts += n
  }
  // A contestant either scripts everything (ours) or nothing (the peers).
  return { commands, roundTrips: scripts > 0 ? scripts : commands }
}

async function measure(
  redis: PrivateRedis,
  server: { port: number; cpu(): Promise<number> },
  cookie: string,
  scenario: Scenario,
): Promise<Sample> {
  const url = `http://127.0.0.1:${server.port}/${scenario}`
  // Warm up (JIT, connection pools), then measure.
  await autocannon({ url, headers: { cookie }, connections: CONNECTIONS, duration: SMOKE ? 1 : 2 })
  const before = await redis.commandStats()
  const appBefore = await server.cpu()
  const redisBefore = await redis.cpuMicros()
  const result = await autocannon({
    url,
    headers: { cookie },
    connections: CONNECTIONS,
    duration: SECONDS,
  })
  const appAfter = await server.cpu()
  const redisAfter = await redis.cpuMicros()
  const after = await redis.commandStats()
  const { commands, roundTrips } = diff(before, after)
  const ok = result['2xx']
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: ok,
    roundTrips: roundTrips / ok,
    commands: commands / ok,
    appCpu: (appAfter - appBefore) / ok,
    redisCpu: (redisAfter - redisBefore) / ok,
    errors: result.errors + result.non2xx,
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

const redis = await startPrivateRedis()
const samples = new Map<string, Sample[]>()
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < CONTESTANTS.length; i++) {
      if (ONLY !== undefined && !CONTESTANTS[i]!.includes(ONLY)) continue
      const server = await startChild(i, redis.port)
      try {
        const baseline = CONTESTANTS[i]!.endsWith('no session')
        const cookie = await login(server.port, baseline)
        for (const scenario of baseline ? (['read'] as const) : SCENARIOS) {
          const sample = await measure(redis, server, cookie, scenario)
          const key = `${scenario}|${CONTESTANTS[i]}`
          samples.set(key, [...(samples.get(key) ?? []), sample])
          process.stderr.write(
            `round ${round + 1} ${scenario} ${CONTESTANTS[i]}: ${Math.round(sample.rps)} req/s, ${sample.appCpu.toFixed(0)} µs app CPU/req\n`,
          )
        }
      } finally {
        await server.stop()
      }
    }
  }
} finally {
  await redis.close()
}

const PEER_OF: Partial<Record<Contestant, Contestant>> = {
  'express + @ballast/session': 'express + express-session + connect-redis',
  'fastify + @ballast/session': 'fastify + @fastify/session + connect-redis',
}
const BASELINE_OF = (c: Contestant) => `${c.split(' ')[0]!.replace(',', '')}, no session`

/** Median app CPU per request of a framework without sessions (from the read runs). */
function baselineCpu(contestant: Contestant): number | undefined {
  const list = samples.get(`read|${BASELINE_OF(contestant)}`)
  return list === undefined ? undefined : median(list.map((s) => s.appCpu))
}

const rows: (string | number)[][] = []
const data: Record<string, unknown> = {}
for (const scenario of SCENARIOS) {
  for (const contestant of CONTESTANTS) {
    const list = samples.get(`${scenario}|${contestant}`)
    if (list === undefined || (scenario === 'write' && contestant.endsWith('no session'))) continue
    const rps = median(list.map((s) => s.rps))
    const cpu = median(list.map((s) => s.appCpu))
    const peer = PEER_OF[contestant]
    const peerList = peer === undefined ? undefined : samples.get(`${scenario}|${peer}`)
    // Ours runs right after its peer in every round: the ratio within a round compares two
    // runs that saw the same machine load, and its median is the figure to quote.
    const pairedRatio =
      peerList === undefined
        ? undefined
        : median(list.map((s, round) => s.rps / peerList[round]!.rps))
    const best = Math.max(...list.map((s) => s.rps))
    const peerBest = peerList === undefined ? undefined : Math.max(...peerList.map((s) => s.rps))
    const peerCpu = peerList === undefined ? undefined : median(peerList.map((s) => s.appCpu))
    const base = baselineCpu(contestant)
    const added = base === undefined ? undefined : cpu - base
    const peerAdded = base === undefined || peerCpu === undefined ? undefined : peerCpu - base
    const ours = contestant.includes('@ballast')
    rows.push([
      scenario === 'read' ? 'unchanged' : 'one field changed',
      ours ? `**${contestant}**` : contestant,
      Math.round(rps).toLocaleString('en-US'),
      Math.round(best).toLocaleString('en-US'),
      fmt(median(list.map((s) => s.p50))),
      fmt(median(list.map((s) => s.p99))),
      median(list.map((s) => s.roundTrips)).toFixed(2),
      median(list.map((s) => s.commands)).toFixed(2),
      fmt(cpu),
      contestant.endsWith('no session') || added === undefined ? '' : fmt(added),
      fmt(median(list.map((s) => s.redisCpu))),
      pairedRatio === undefined ? '' : `${pairedRatio.toFixed(2)}x`,
      peerBest === undefined ? '' : `${(best / peerBest).toFixed(2)}x`,
      peerAdded === undefined || added === undefined
        ? ''
        : `${(peerAdded / Math.max(added, 0.1)).toFixed(2)}x`,
      list.reduce((n, s) => n + s.errors, 0),
    ])
    data[`${scenario}|${contestant}`] = list
  }
}

report({
  package: 'session',
  name: 'http',
  title: `Sessions over HTTP: ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} interleaved rounds`,
  columns: [
    'request',
    'stack',
    'req/s (median)',
    'req/s (best)',
    'p50 ms',
    'p99 ms',
    'round trips/req',
    'Redis commands/req',
    'app CPU µs/req',
    'session CPU µs/req',
    'Redis CPU µs/req',
    'req/s vs peer (median of paired rounds)',
    'req/s vs peer (best vs best)',
    'session CPU: peer / ours',
    'errors',
  ],
  rows,
  notes: [
    'Round trips are client calls counted in Redis INFO commandstats. Ours makes one EVALSHA per read; the commands column adds what that script runs inside Redis (HGETALL, TIME, PEXPIREAT; a write adds HGET, TIME, HSET, PEXPIREAT).',
    'CPU per request is the server process (process.cpuUsage) and the Redis server (INFO cpu) over the measured window, divided by the requests served: it is far less sensitive to a busy machine than req/s. Session CPU is app CPU minus the same framework serving the same routes without sessions (median of the read runs). Ratios: above 1 means ours is better.',
    "Redis CPU: our one EVALSHA costs Redis more CPU than the peers' plain GET + EXPIRE (scripts have a fixed cost), while the app side saves a round trip and CPU.",
    'Peers: express-session (resave: false, saveUninitialized: false) and @fastify/session (rolling: true by default) with connect-redis on node-redis; ours with ioredis. Each server runs in its own process; autocannon runs in the parent.',
  ],
  data,
})
