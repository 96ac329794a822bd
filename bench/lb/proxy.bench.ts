/**
 * The reverse proxy on loopback against http-proxy, @fastify/reply-from, @fastify/http-proxy
 * and nginx (one worker, started by this bench with a generated config on its own port), all in
 * front of the same two backends. Each server runs in its own process; autocannon runs in this
 * one. For each: requests/s and latency under load (autocannon, 32 connections), and the latency
 * each adds over calling a backend directly, measured one request at a time (µs).
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/lb/proxy.bench.ts
 *
 * nginx is optional: without it on PATH the nginx row is skipped with a note (Debian:
 * `apt-get install -y nginx`).
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent, request as httpRequest } from 'node:http'
import { createServer, connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { fmt, fmtInt, isSmoke, report, sampleLatency } from '../harness.js'
import { NODE_PROXIES } from './proxyContestants.js'

const SMOKE = isSmoke()
const SECONDS = SMOKE ? 1 : Number(process.env.LB_BENCH_SECONDS ?? 5)
const ROUNDS = SMOKE ? 1 : Number(process.env.LB_BENCH_ROUNDS ?? 3)
const CONNECTIONS = SMOKE ? 4 : 32
const PROBES = SMOKE ? 50 : 2000

const contestantsFile = fileURLToPath(new URL('./proxyContestants.ts', import.meta.url))

interface Running {
  port: number
  ports: number[]
  /** The server's process (its children count too: nginx's worker). */
  pid: number
  stop(): Promise<void>
}

const CLK_TCK = 100

/** CPU time (user + system) in µs of a process and its direct children, from /proc. */
function cpuMicros(pid: number): number {
  const one = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLK_TCK
    } catch {
      return 0
    }
  }
  let total = one(pid)
  try {
    for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)) {
      if (child !== '') total += one(Number(child))
    }
  } catch {}
  return total
}

async function startChild(serve: string, targets: string[] = []): Promise<Running> {
  const child = fork(contestantsFile, [], {
    execArgv: process.execArgv,
    env: { ...process.env, LB_BENCH_SERVE: serve, LB_BENCH_TARGETS: targets.join(',') },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const { port, ports } = await new Promise<{ port: number; ports: number[] }>(
    (resolve, reject) => {
      child.once('message', (m) => resolve(m as { port: number; ports: number[] }))
      child.once('exit', (code) => reject(new Error(`${serve} exited with ${code}`)))
    },
  )
  return {
    port,
    ports,
    pid: child.pid!,
    stop: async () => {
      const exited = once(child, 'exit')
      child.send('stop')
      await exited
    },
  }
}

function nginxPath(): string | undefined {
  for (const candidate of ['nginx', '/usr/sbin/nginx']) {
    try {
      execFileSync(candidate, ['-v'], { stdio: 'ignore' })
      return candidate
    } catch {}
  }
  return undefined
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const started = Date.now()
  while (Date.now() - started < timeoutMs) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = netConnect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`)
}

async function startNginx(binary: string, backendPorts: number[]): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'ballast-lb-nginx-'))
  chmodSync(dir, 0o755)
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(
    conf,
    `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream backends {
${backendPorts.map((p) => `    server 127.0.0.1:${p};`).join('\n')}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`,
  )
  const child: ChildProcess = spawn(binary, ['-c', conf, '-p', dir, '-e', `${dir}/error.log`], {
    stdio: 'ignore',
  })
  await waitForPort(port, 5000)
  return {
    port,
    ports: [port],
    pid: child.pid!,
    stop: async () => {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

interface Row {
  name: string
  rps: number
  cpuUsPerRequest: number
  p50: number
  p99: number
  addedP50us: number
  addedP99us: number
  errors: number
}

async function probe(port: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const get = () =>
    new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume()
        res.once('end', resolve)
      })
      req.once('error', reject)
      req.end()
    })
  const stats = await sampleLatency(get, { iterations: PROBES, concurrency: 1 })
  agent.destroy()
  return stats
}

async function load(port: number, pid: number) {
  const url = `http://127.0.0.1:${port}/`
  await autocannon({ url, connections: CONNECTIONS, duration: SMOKE ? 1 : 2 })
  const before = cpuMicros(pid)
  const result = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS })
  return { result, cpuUsPerRequest: (cpuMicros(pid) - before) / Math.max(1, result.requests.total) }
}

const backends = await startChild('backends')
const targets = backends.ports.map((p) => `http://127.0.0.1:${p}`)
const notes: string[] = []
const DIRECT = 'direct to one backend (no proxy)'
// LB_BENCH_ONLY=ballast,nginx keeps the contestants whose name contains one of the words.
const only = process.env.LB_BENCH_ONLY?.split(',').filter((w) => w !== '')
const wanted = (name: string) => only === undefined || only.some((w) => name.includes(w))
const contestants: Array<{ name: string; start: () => Promise<Running> }> = [
  { name: DIRECT, start: async () => ({ ...backends, stop: async () => {} }) },
  ...NODE_PROXIES.filter(wanted).map((name) => ({
    name,
    start: () => startChild(name, targets),
  })),
]
const nginx = nginxPath()
if (nginx === undefined)
  notes.push('nginx row skipped: nginx is not installed (Debian: `apt-get install -y nginx`).')
else if (wanted('nginx'))
  contestants.push({
    name: 'nginx (1 worker, keepalive 64)',
    start: () => startNginx(nginx, backends.ports),
  })

interface Sample {
  rps: number
  cpuUsPerRequest: number
  p50: number
  p99: number
  probeP50: number
  probeP99: number
  errors: number
}
const samples = new Map<string, Sample[]>(contestants.map((c) => [c.name, []]))
try {
  // Rounds interleave the contestants, so a burst of noise on the shared cores hits all of them.
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of contestants) {
      const running = await c.start()
      try {
        const latency = await probe(running.port)
        const { result, cpuUsPerRequest } = await load(running.port, running.pid)
        samples.get(c.name)!.push({
          cpuUsPerRequest,
          rps: result.requests.average,
          p50: result.latency.p50,
          p99: result.latency.p99,
          probeP50: latency.p50,
          probeP99: latency.p99,
          errors: result.errors + result.non2xx,
        })
      } finally {
        await running.stop()
      }
    }
  }
} finally {
  await backends.stop()
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const direct = samples.get(DIRECT)!
const rows: Row[] = contestants.map((c) => {
  const s = samples.get(c.name)!
  return {
    name: c.name,
    rps: median(s.map((x) => x.rps)),
    cpuUsPerRequest: median(s.map((x) => x.cpuUsPerRequest)),
    p50: median(s.map((x) => x.p50)),
    p99: median(s.map((x) => x.p99)),
    addedP50us:
      c.name === DIRECT
        ? 0
        : median(s.map((x) => x.probeP50)) - median(direct.map((x) => x.probeP50)),
    addedP99us:
      c.name === DIRECT
        ? 0
        : median(s.map((x) => x.probeP99)) - median(direct.map((x) => x.probeP99)),
    errors: s.reduce((n, x) => n + x.errors, 0),
  }
})

const nginxRow = rows.find((r) => r.name.startsWith('nginx'))
const ours = rows.find((r) => r.name.startsWith('@ballast')) ?? rows[0]!
report({
  package: 'lb',
  name: 'proxy',
  title: `Reverse proxy on loopback, 2 backends, autocannon ${CONNECTIONS} connections × ${SECONDS} s, median of ${ROUNDS} interleaved rounds`,
  columns: [
    'proxy',
    'CPU µs / request',
    'req per CPU-s',
    'x nginx (per CPU-s)',
    'x ours (per CPU-s)',
    'req/s (wall)',
    'x nginx (wall)',
    'p50 ms (load)',
    'p99 ms (load)',
    'added p50 µs (1 at a time)',
    'added p99 µs',
    'errors',
  ],
  rows: rows.map((r) => [
    r.name === ours.name ? `**${r.name}**` : r.name,
    r.name === DIRECT ? '' : fmt(r.cpuUsPerRequest),
    r.name === DIRECT ? '' : fmtInt(1e6 / r.cpuUsPerRequest),
    r.name === DIRECT || nginxRow === undefined
      ? ''
      : `${(nginxRow.cpuUsPerRequest / r.cpuUsPerRequest).toFixed(2)}x`,
    r.name === DIRECT ? '' : `${(ours.cpuUsPerRequest / r.cpuUsPerRequest).toFixed(2)}x`,
    fmtInt(r.rps),
    nginxRow === undefined ? 'n/a' : `${(r.rps / nginxRow.rps).toFixed(2)}x`,
    fmt(r.p50),
    fmt(r.p99),
    r.addedP50us === 0 && r.addedP99us === 0 ? '' : fmt(r.addedP50us),
    r.addedP99us === 0 && r.addedP50us === 0 ? '' : fmt(r.addedP99us),
    r.errors,
  ]),
  notes: [
    ...notes,
    'CPU µs / request is the proxy process’s own user+system time (nginx: master and worker) over the load run divided by the requests served, read from /proc: it does not depend on how busy the shared cores are, unlike req/s, which other processes on this 2-core machine disturb. "req per CPU-s" is what one core would serve.',
    'Each proxy and the backends run in their own processes on the same 2 shared cores as autocannon; figures are medians of interleaved rounds. "Added" latency: median/p99 of one request at a time through the proxy minus the same directly to a backend.',
    'Ours runs with its defaults (peak-EWMA, X-Forwarded-*, retries, outlier detection); http-proxy alternates targets with a keep-alive agent; reply-from balances with undici BalancedPool; @fastify/http-proxy alternates with getUpstream.',
  ],
  data: { rows, samples: Object.fromEntries(samples) },
})
