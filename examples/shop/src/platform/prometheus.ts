/**
 * The shop's Prometheus: Debian's `/usr/bin/prometheus`, started by the supervisor with a
 * configuration generated from `prometheus/prometheus.yml.in` (one scrape job per service,
 * the rules of `prometheus/rules/`) and its storage under the run directory; and the small
 * client of its HTTP API that the ops page reads (`query_range`, `alerts`).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { SHOP_DIR, type ShopConfig } from '../config.js'

/** Debian's package `prometheus` installs it here (scripts/system-deps.sh). */
export const PROMETHEUS_BIN = '/usr/bin/prometheus'
/** Its rule checker, from the same package. */
export const PROMTOOL_BIN = '/usr/bin/promtool'
/** The template and the rules, in the repository. */
export const PROMETHEUS_DIR = join(SHOP_DIR, 'prometheus')
export const RULES_DIR = join(PROMETHEUS_DIR, 'rules')

/** One scrape target: a process's metrics exporter. */
export interface ScrapeTarget {
  /** Prometheus's `job`: the service (`catalog`), or `supervisor`. */
  job: string
  /** Prometheus's `instance`: the process (`catalog-2`). */
  instance: string
  port: number
}

/** Every process of the shop that serves `/metrics`, the supervisor's own exporter included. */
export function scrapeTargets(config: ShopConfig): ScrapeTarget[] {
  return [
    ...config.instances.map((i) => ({ job: i.service, instance: i.name, port: i.metricsPort })),
    { job: 'supervisor', instance: 'supervisor', port: config.supervisorMetricsPort },
  ]
}

const quote = (s: string) => `'${s.replace(/'/g, "''")}'`

/** The configuration file's text: the template with the namespace, the rules and one job per service. */
export function prometheusConfig(config: ShopConfig, rulesDir = RULES_DIR): string {
  const jobs = new Map<string, ScrapeTarget[]>()
  for (const t of scrapeTargets(config)) jobs.set(t.job, [...(jobs.get(t.job) ?? []), t])
  const scrapeConfigs = [...jobs]
    .map(([job, targets]) =>
      [
        `  - job_name: ${quote(job)}`,
        '    static_configs:',
        ...targets.flatMap((t) => [
          `      - targets: [${quote(`127.0.0.1:${t.port}`)}]`,
          `        labels: { instance: ${quote(t.instance)} }`,
        ]),
      ].join('\n'),
    )
    .join('\n')
  return readFileSync(join(PROMETHEUS_DIR, 'prometheus.yml.in'), 'utf8')
    .replace('{{ns}}', config.ns)
    .replaceAll('{{rules}}', rulesDir)
    .replace('{{scrape_configs}}', scrapeConfigs)
}

export interface RunningPrometheus {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly process: ChildProcess
  stop(): Promise<void>
}

/**
 * Writes the configuration under `<run dir>/prometheus/` and starts Prometheus there
 * (storage in `<run dir>/prometheus/data`, listening on 127.0.0.1 only), resolving once it
 * answers `/-/ready`. Fails naming the Debian package when the binary is missing.
 */
export async function startPrometheus(
  config: ShopConfig,
  options: { bin?: string; timeout?: number } = {},
): Promise<RunningPrometheus> {
  const bin = options.bin ?? PROMETHEUS_BIN
  if (!existsSync(bin))
    throw new Error(
      `${bin} is missing: install Debian's package "prometheus" (bash scripts/system-deps.sh, as root)`,
    )
  const dir = join(config.runDir, 'prometheus')
  mkdirSync(join(dir, 'data'), { recursive: true })
  mkdirSync(join(config.runDir, 'logs'), { recursive: true })
  const file = join(dir, 'prometheus.yml')
  writeFileSync(file, prometheusConfig(config))
  const url = `http://127.0.0.1:${config.prometheusPort}`
  const log = createWriteStream(join(config.runDir, 'logs', 'prometheus.log'), { flags: 'a' })
  const proc = spawn(
    bin,
    [
      `--config.file=${file}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      '--storage.tsdb.retention.time=2d',
      `--web.listen-address=127.0.0.1:${config.prometheusPort}`,
      `--web.external-url=${url}/`,
      '--log.level=warn',
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  // For `main.ts stop`, which ends a Prometheus left behind by a supervisor that was killed.
  const pidFile = prometheusPidFile(config.runDir)
  if (proc.pid) writeFileSync(pidFile, `${proc.pid}\n`)
  proc.stdout?.pipe(log, { end: false })
  proc.stderr?.pipe(log, { end: false })
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  proc.once('error', () => {})

  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM')
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(t)
    }
    rmSync(pidFile, { force: true })
    log.end()
  }

  const deadline = Date.now() + (options.timeout ?? 20_000)
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      log.end()
      throw new Error(
        `prometheus exited at start (${proc.exitCode ?? proc.signalCode}); see ${join(config.runDir, 'logs', 'prometheus.log')}`,
      )
    }
    try {
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) })
      if (res.ok) break
    } catch {}
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`prometheus did not become ready on ${url} in time`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return { url, process: proc, stop }
}

/** Where the supervisor notes its Prometheus's pid. */
export function prometheusPidFile(runDir: string): string {
  return join(runDir, 'prometheus', 'prometheus.pid')
}

/**
 * Whether `pid` is the Prometheus of this run directory (its command line names the
 * configuration file written there), so `stop` never signals another process that took the pid.
 */
export function isShopPrometheus(pid: number, runDir: string): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return cmd.includes(`--config.file=${join(runDir, 'prometheus', 'prometheus.yml')}`)
  } catch {
    return false
  }
}

/** One series of a range query: its labels and `[unix seconds, value]` points. */
export interface RangeSeries {
  metric: Record<string, string>
  values: [number, number][]
}

/** A firing or pending alert, as `/api/v1/alerts` lists it. */
export interface PrometheusAlert {
  labels: Record<string, string>
  annotations: Record<string, string>
  state: 'firing' | 'pending' | 'inactive'
  activeAt: string
  value: string
}

async function api<T>(url: string, timeout: number): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeout) })
  const body = (await res.json()) as { status: string; data: T; error?: string }
  if (body.status !== 'success') throw new Error(`prometheus: ${body.error ?? res.status}`)
  return body.data
}

/** `query_range` over the last `window` seconds at `step` seconds. */
export async function queryRange(
  base: string,
  query: string,
  o: { window: number; step: number; end?: number; timeout?: number },
): Promise<RangeSeries[]> {
  const end = o.end ?? Date.now() / 1000
  const params = new URLSearchParams({
    query,
    start: String(end - o.window),
    end: String(end),
    step: String(o.step),
  })
  const data = await api<{
    result: { metric: Record<string, string>; values: [number, string][] }[]
  }>(`${base}/api/v1/query_range?${params}`, o.timeout ?? 2000)
  return data.result.map((r) => ({
    metric: r.metric,
    values: r.values.map(([t, v]) => [t, sampleValue(v)] as [number, number]),
  }))
}

/** A sample as Prometheus writes it in JSON: a decimal, `NaN`, `+Inf` or `-Inf` (which `Number()` reads as NaN). */
export function sampleValue(text: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY
  if (text === '-Inf') return Number.NEGATIVE_INFINITY
  return Number(text)
}

/** The alerts Prometheus holds now (pending and firing). */
export async function alerts(base: string, timeout = 2000): Promise<PrometheusAlert[]> {
  return (await api<{ alerts: PrometheusAlert[] }>(`${base}/api/v1/alerts`, timeout)).alerts
}
