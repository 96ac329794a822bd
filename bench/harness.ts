/**
 * The benchmark harness every package's benchmarks use. Each `bench/<package>/<topic>.bench.ts`
 * is a standalone script: it runs us and the peers in the same process, prints a markdown
 * table and writes it as JSON under `bench/results/`. `BENCH_SMOKE=1` (CI) runs every case
 * once with a tiny iteration count, so no benchmark rots.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { do_not_optimize, measure } from 'mitata'

export { do_not_optimize }

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results')

/** True under `BENCH_SMOKE=1`: run each case a handful of times, only to prove it still runs. */
export function isSmoke(): boolean {
  return process.env.BENCH_SMOKE === '1'
}

/** One contestant of a {@link compare} run. */
export interface Case {
  name: string
  fn: () => unknown
  /** Marks our implementation: peers are compared with the first case so marked. */
  ours?: boolean
}

export interface CompareOptions {
  package: string
  name: string
  title: string
  cases: Case[]
  notes?: string[]
}

export interface CompareRow {
  name: string
  ours: boolean
  nsPerOp: number
  p50: number
  p99: number
  opsPerSec: number
}

/**
 * Micro-benchmarks with mitata, every case in this one process. The table gives ns/op (mean),
 * p50 and p99 of mitata's samples, and for each peer how many times faster ours is
 * (peer time / our time: above 1 means ours is faster).
 */
export async function compare(options: CompareOptions): Promise<CompareRow[]> {
  const smoke = isSmoke()
  const rows: CompareRow[] = []
  for (const c of options.cases) {
    const stats = await measure(
      c.fn,
      smoke ? { min_samples: 1, max_samples: 3, min_cpu_time: 1e6, warmup_samples: 1 } : {},
    )
    rows.push({
      name: c.name,
      ours: c.ours === true,
      nsPerOp: stats.avg,
      p50: stats.p50,
      p99: stats.p99,
      opsPerSec: 1e9 / stats.avg,
    })
  }
  const ours = rows.find((r) => r.ours)
  report({
    package: options.package,
    name: options.name,
    title: options.title,
    columns: ['case', 'ns/op', 'p50 ns', 'p99 ns', 'ops/s', 'this / ours (time)'],
    rows: rows.map((r) => [
      r.ours ? `**${r.name}**` : r.name,
      fmt(r.nsPerOp),
      fmt(r.p50),
      fmt(r.p99),
      fmtInt(r.opsPerSec),
      ours === undefined || r === ours ? '' : `${(r.nsPerOp / ours.nsPerOp).toFixed(2)}x`,
    ]),
    notes: options.notes,
    data: rows,
  })
  return rows
}

/** Latency percentiles (µs) and throughput of an I/O path. */
export interface LatencyStats {
  iterations: number
  concurrency: number
  p50: number
  p99: number
  p999: number
  mean: number
  opsPerSec: number
}

export interface SampleOptions {
  /** Total calls measured. */
  iterations: number
  /** Calls in flight at once. @default 1 */
  concurrency?: number
  /** Calls made first and not measured. @default iterations / 10 */
  warmup?: number
}

/** Runs `fn` `iterations` times with `concurrency` callers and returns percentiles in µs. */
export async function sampleLatency(
  fn: (i: number) => Promise<unknown> | unknown,
  options: SampleOptions,
): Promise<LatencyStats> {
  const iterations = isSmoke() ? Math.min(options.iterations, 20) : options.iterations
  const concurrency = Math.max(1, Math.min(options.concurrency ?? 1, iterations))
  const warmup = isSmoke() ? 1 : (options.warmup ?? Math.floor(iterations / 10))
  for (let i = 0; i < warmup; i++) await fn(-1 - i)
  const samples = new Float64Array(iterations)
  let next = 0
  const started = process.hrtime.bigint()
  const worker = async () => {
    while (next < iterations) {
      const i = next++
      const t0 = process.hrtime.bigint()
      await fn(i)
      samples[i] = Number(process.hrtime.bigint() - t0) / 1e3
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9
  samples.sort()
  const at = (q: number) => samples[Math.min(iterations - 1, Math.floor(q * iterations))] ?? 0
  let sum = 0
  for (const s of samples) sum += s
  return {
    iterations,
    concurrency,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    mean: sum / iterations,
    opsPerSec: iterations / wallSeconds,
  }
}

export interface ReportOptions {
  package: string
  name: string
  title: string
  columns: string[]
  rows: (string | number)[][]
  notes?: string[] | undefined
  /** Raw figures kept in the JSON beside the printed table. */
  data?: unknown
}

/** Prints a markdown table and writes it, with `data`, to `bench/results/<package>-<name>.json`. */
export function report(options: ReportOptions): void {
  const cells = options.rows.map((row) => row.map(String))
  const lines = [
    `| ${options.columns.join(' | ')} |`,
    `| ${options.columns.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`,
    ...cells.map((row) => `| ${row.join(' | ')} |`),
  ]
  const header = `\n### ${options.title}${isSmoke() ? ' (smoke run: figures mean nothing)' : ''}\n`
  process.stdout.write(`${header}\n${lines.join('\n')}\n`)
  for (const note of options.notes ?? []) process.stdout.write(`\n${note}\n`)
  process.stdout.write(`\nnode ${process.version}, ${new Date().toISOString()}\n`)
  mkdirSync(RESULTS, { recursive: true })
  writeFileSync(
    join(RESULTS, `${options.package}-${options.name}.json`),
    `${JSON.stringify(
      {
        package: options.package,
        name: options.name,
        title: options.title,
        smoke: isSmoke(),
        node: process.version,
        date: new Date().toISOString(),
        columns: options.columns,
        rows: options.rows,
        notes: options.notes ?? [],
        data: options.data ?? null,
      },
      null,
      2,
    )}\n`,
  )
}

/** A number with three significant figures, for tables. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n)
  if (n >= 100) return fmtInt(n)
  return n.toPrecision(3)
}

/** An integer with thousands separators. */
export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}
