/**
 * The ops page's charts: small line charts drawn on the server as inline SVG from Prometheus's
 * HTTP API (`query_range` over the recording rules of `prometheus/rules/`), so the page needs
 * no script, no inline style (the Content-Security-Policy allows neither) and nothing from the
 * network but the shop itself. Each chart scales to its column (the page fits 1280 px) and
 * lists its series below it with the last value in a readable unit.
 */
import type { ShopConfig } from '../config.js'
import {
  alerts,
  type PrometheusAlert,
  queryRange,
  type RangeSeries,
} from '../platform/prometheus.js'
import { html, type SafeHtml } from './html.js'

/** How a chart's values read: requests per second, a share, seconds, a count or a breaker state. */
export type ChartUnit = 'rate' | 'ratio' | 'seconds' | 'count' | 'state'

export interface ChartSpec {
  /** `data-chart` of the SVG: `request-rate`, `p99`... */
  name: string
  title: string
  /** PromQL: a recording rule, aggregated to a handful of series. */
  query: string
  unit: ChartUnit
  /** The labels that name a series in the legend (in this order). */
  labels: readonly string[]
}

/** The charts of the ops page, in order. */
export const OPS_CHARTS: readonly ChartSpec[] = Object.freeze([
  {
    name: 'request-rate',
    title: 'Requests per second',
    query: 'job:http_server_requests:rate15s',
    unit: 'rate',
    labels: ['job'],
  },
  {
    name: 'error-ratio',
    title: 'Error ratio (5xx)',
    query: 'job:http_server_request_errors:ratio_rate15s',
    unit: 'ratio',
    labels: ['job'],
  },
  {
    name: 'p99',
    title: 'p99 request duration',
    query: 'job:http_server_request_duration_seconds:p99_rate15s',
    unit: 'seconds',
    labels: ['job'],
  },
  {
    name: 'cache-hit-ratio',
    title: 'Cache hit ratio (L1 + L2)',
    query: 'job:ballast_cache_hit_ratio:rate15s',
    unit: 'ratio',
    labels: ['job'],
  },
  {
    name: 'breakers',
    title: 'Circuit breakers (worst instance)',
    query:
      'max by (ballast_resilience_breaker_name) (breaker:ballast_resilience_breaker_state:level)',
    unit: 'state',
    labels: ['ballast_resilience_breaker_name'],
  },
  {
    name: 'queues',
    title: 'Queue depths (ready messages)',
    query: 'max by (messaging_destination_name) (shop_queue_messages)',
    unit: 'count',
    labels: ['messaging_destination_name'],
  },
  {
    name: 'replica-lag',
    title: 'Replica lag',
    query: 'replica:ballast_sharding_replica_lag_seconds:max',
    unit: 'seconds',
    labels: ['ballast_sharding_replica'],
  },
])

/** What the charts cover: the last `window` seconds, one point every `step` seconds. */
export interface ChartWindow {
  window: number
  step: number
}

export const DEFAULT_CHART_WINDOW: ChartWindow = Object.freeze({ window: 300, step: 5 })

/** Series a chart draws at most (the busiest by last value); the others are counted. */
const MAX_SERIES = 10

const COLOURS = [
  '#2f7fb5',
  '#c2721f',
  '#4f9a4a',
  '#8e6fb5',
  '#b58b2f',
  '#3f8f8a',
  '#c62828',
  '#5b6abf',
  '#7a8a3a',
  '#8a6a5a',
]

const STATES = ['closed', 'half-open', 'open']

/** A value in its unit, short: `12.3/s`, `4.2%`, `840 µs`, `12 ms`, `1.32 s`, `17`, `open`. */
export function formatValue(value: number, unit: ChartUnit): string {
  if (Number.isNaN(value)) return '–'
  if (value === 0 && unit !== 'state') return unit === 'ratio' ? '0%' : '0'
  if (value === Number.POSITIVE_INFINITY) return unit === 'seconds' ? 'stopped' : '∞'
  switch (unit) {
    case 'rate':
      return `${value >= 100 ? Math.round(value) : value >= 10 ? value.toFixed(1) : value.toFixed(2)}/s`
    case 'ratio':
      return `${(value * 100).toFixed(value >= 0.9995 || value === 0 ? 0 : 1)}%`
    case 'seconds': {
      const ms = value * 1000
      if (ms < 1 && ms > 0) return `${Math.round(ms * 1000)} µs`
      if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`
      return `${value.toFixed(2)} s`
    }
    case 'state':
      return STATES[Math.max(0, Math.min(2, Math.round(value)))] ?? String(value)
    default:
      return Number.isInteger(value) ? String(value) : value.toFixed(1)
  }
}

function seriesName(spec: ChartSpec, s: RangeSeries): string {
  const parts = spec.labels.map((l) => s.metric[l]).filter((v): v is string => v !== undefined)
  return parts.length > 0 ? parts.join(' · ') : '(all)'
}

function lastValue(s: RangeSeries): number {
  for (let i = s.values.length - 1; i >= 0; i--) {
    const v = (s.values[i] as [number, number])[1]
    if (!Number.isNaN(v)) return v
  }
  return Number.NaN
}

// The chart's coordinates (the SVG scales to its column).
const W = 400
const H = 150
const LEFT = 52
const RIGHT = 8
const TOP = 10
const BOTTOM = 20

/** The y axis's top: a round number above the largest finite value (1 for ratios, 2 for states). */
function axisMax(unit: ChartUnit, series: readonly RangeSeries[]): number {
  if (unit === 'state') return 2
  let max = 0
  for (const s of series) for (const [, v] of s.values) if (Number.isFinite(v) && v > max) max = v
  if (unit === 'ratio') return Math.max(max, 1)
  if (max === 0) return 1
  const magnitude = 10 ** Math.floor(Math.log10(max))
  for (const m of [1, 2, 5, 10]) if (max <= m * magnitude) return m * magnitude
  return 10 * magnitude
}

/**
 * The SVG path of one series: `M x y L x y ...`, a new `M` after a gap (no value, NaN). An
 * infinite value (a stopped replica) is drawn at the top of the chart.
 */
export function linePath(
  values: readonly [number, number][],
  start: number,
  end: number,
  max: number,
): string {
  const span = Math.max(end - start, 1)
  const x = (t: number) => LEFT + ((t - start) / span) * (W - LEFT - RIGHT)
  const y = (v: number) => TOP + (1 - Math.min(v, max) / max) * (H - TOP - BOTTOM)
  let d = ''
  let pen = false
  for (const [t, v] of values) {
    if (Number.isNaN(v)) {
      pen = false
      continue
    }
    d += `${d === '' ? '' : ' '}${pen ? 'L' : 'M'}${x(t).toFixed(1)} ${y(v).toFixed(1)}`
    pen = true
  }
  return d
}

/** One chart: the SVG (`data-chart`, `data-series` = series drawn) and its legend. */
export function renderChart(
  spec: ChartSpec,
  series: readonly RangeSeries[] | Error,
  range: { start: number; end: number },
): SafeHtml {
  if (series instanceof Error)
    return html`<figure class="chart"><figcaption>${spec.title}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${spec.title}: unavailable" data-chart="${spec.name}" data-series="0"><text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#b5441a" font-size="12">Prometheus unavailable: ${series.message}</text></svg></figure>`
  const sorted = [...series]
    .filter((s) => s.values.some(([, v]) => !Number.isNaN(v)))
    .sort((a, b) => {
      const va = lastValue(a)
      const vb = lastValue(b)
      return (
        (Number.isNaN(vb) ? -1 : vb) - (Number.isNaN(va) ? -1 : va) ||
        seriesName(spec, a).localeCompare(seriesName(spec, b))
      )
    })
  const shown = sorted.slice(0, MAX_SERIES)
  const max = axisMax(spec.unit, shown)
  const ticks = spec.unit === 'state' ? [0, 1, 2] : [0, max / 2, max]
  const yOf = (v: number) => TOP + (1 - v / max) * (H - TOP - BOTTOM)
  const minutes = Math.round((range.end - range.start) / 60)
  return html`<figure class="chart"><figcaption>${spec.title}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${spec.title}, last ${minutes} minutes" data-chart="${spec.name}" data-series="${shown.length}" font-family="system-ui, sans-serif" font-size="10">
${ticks.map(
  (v) =>
    html`<line x1="${LEFT}" y1="${yOf(v).toFixed(1)}" x2="${W - RIGHT}" y2="${yOf(v).toFixed(1)}" stroke="#e3e3ea"/><text x="${LEFT - 4}" y="${(yOf(v) + 3).toFixed(1)}" text-anchor="end" fill="#667">${formatValue(v, spec.unit)}</text>`,
)}
<text x="${LEFT}" y="${H - 5}" fill="#667">−${minutes} min</text><text x="${W - RIGHT}" y="${H - 5}" text-anchor="end" fill="#667">now</text>
${
  shown.length === 0
    ? html`<text x="${(LEFT + W) / 2}" y="${H / 2}" text-anchor="middle" fill="#667" font-size="12">no data yet</text>`
    : shown.map(
        (s, i) =>
          html`<path data-line="${seriesName(spec, s)}" d="${linePath(s.values, range.start, range.end, max)}" fill="none" stroke="${COLOURS[i % COLOURS.length]}" stroke-width="1.6" stroke-linejoin="round"/>`,
      )
}
</svg>
<ul class="legend">${shown.map(
    (s, i) =>
      html`<li><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" width="10" height="10" aria-hidden="true"><rect width="10" height="10" rx="2" fill="${COLOURS[i % COLOURS.length]}"/></svg> ${seriesName(spec, s)} <b>${formatValue(lastValue(s), spec.unit)}</b></li>`,
  )}${sorted.length > shown.length ? html`<li class="muted">${sorted.length - shown.length} more series</li>` : ''}</ul></figure>`
}

export interface OpsCharts {
  charts: SafeHtml
  alerts: SafeHtml
}

/**
 * The charts and the alerts of the ops page, from the shop's Prometheus. Never throws: a chart
 * whose query fails says so in its place.
 */
export async function opsCharts(
  config: ShopConfig,
  window: ChartWindow = DEFAULT_CHART_WINDOW,
): Promise<OpsCharts> {
  const base = `http://127.0.0.1:${config.prometheusPort}`
  const end = Math.floor(Date.now() / 1000)
  const start = end - window.window
  const [results, active] = await Promise.all([
    Promise.all(
      OPS_CHARTS.map((spec) =>
        queryRange(base, spec.query, { window: window.window, step: window.step, end }).catch(
          (err: Error) => err,
        ),
      ),
    ),
    alerts(base).catch((err: Error) => err),
  ])
  return {
    charts: html`<div class="charts">${OPS_CHARTS.map((spec, i) =>
      renderChart(spec, results[i] as RangeSeries[] | Error, { start, end }),
    )}</div>`,
    alerts: renderAlerts(active, base),
  }
}

/** The alerts Prometheus holds (firing first), or that none is. */
export function renderAlerts(active: readonly PrometheusAlert[] | Error, base: string): SafeHtml {
  if (active instanceof Error)
    return html`<section data-alerts><h2>Alerts</h2><p class="bad">Prometheus unavailable: ${active.message}</p></section>`
  const sorted = [...active].sort(
    (a, b) => Number(b.state === 'firing') - Number(a.state === 'firing'),
  )
  return html`<section data-alerts><h2>Alerts</h2>
${
  sorted.length === 0
    ? html`<p class="ok">No alert firing. <span class="muted">Rules: breaker open, dead-letter queue growing, replica stale, outbox backlog (Prometheus at ${base}).</span></p>`
    : html`<ul class="alerts">${sorted.map(
        (a) =>
          html`<li data-alert="${a.labels.alertname ?? ''}" class="${a.state === 'firing' ? 'bad' : 'muted'}"><b>${a.state === 'firing' ? 'FIRING' : 'pending'}</b> ${a.labels.alertname ?? ''} (${a.labels.severity ?? 'no severity'}): ${a.annotations.summary ?? ''} <span class="muted">since ${new Date(a.activeAt).toISOString().slice(11, 19)} UTC</span></li>`,
      )}</ul>`
}</section>`
}
