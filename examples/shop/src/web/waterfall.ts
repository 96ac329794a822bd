/**
 * The ops page's trace waterfall: the last checkouts as the supervisor's trace receiver holds
 * them (`traces.ts`), one row per span (service, span name, a bar at its offset from the start
 * of the trace, its duration; failed spans in red). Server-side inline SVG, which scales to
 * the page's width (no horizontal scrolling at 1280 px) and needs no script or inline style
 * (the pages' Content-Security-Policy allows neither); hovering a row shows its details.
 */
import { loadConfig, type ShopConfig } from '../config.js'
import { controlHeaders } from '../control.js'
import type { ReceivedSpan, StoredTrace } from '../traces.js'
import { html, type SafeHtml } from './html.js'

export interface WaterfallOptions {
  /** How many checkouts are shown, newest first. @default 3 */
  limit?: number
  /** Rows per trace; further spans are counted below the chart. @default 80 */
  maxRows?: number
}

export const DEFAULT_WATERFALL_OPTIONS = Object.freeze({ limit: 3, maxRows: 80 })

/**
 * The waterfall section of the last checkouts, read from the trace receiver on the control
 * port. Never throws: when the receiver cannot be read, the section says so.
 */
export async function traceWaterfallSection(
  config: ShopConfig = loadConfig(),
  options: WaterfallOptions = {},
): Promise<SafeHtml> {
  const limit = options.limit ?? DEFAULT_WATERFALL_OPTIONS.limit
  let traces: StoredTrace[]
  try {
    const res = await fetch(`http://127.0.0.1:${config.controlPort}/traces?kept=1&limit=${limit}`, {
      headers: controlHeaders(config.runDir),
      signal: AbortSignal.timeout(1000),
    })
    if (!res.ok) throw new Error(`the trace receiver answered ${res.status}`)
    traces = ((await res.json()) as { traces: StoredTrace[] }).traces
  } catch (err) {
    return html`<section class="traces" data-traces><h2>Traces: the last checkouts</h2>
<p class="bad">Traces unavailable: ${(err as Error).message}</p></section>`
  }
  return renderWaterfalls(traces, options)
}

/** The section for the given traces (newest first). */
export function renderWaterfalls(
  traces: readonly StoredTrace[],
  options: WaterfallOptions = {},
): SafeHtml {
  const limit = options.limit ?? DEFAULT_WATERFALL_OPTIONS.limit
  const shown = traces.slice(0, limit)
  return html`<section class="traces" data-traces><h2>Traces: the last checkouts</h2>
${
  shown.length === 0
    ? html`<p class="muted">No checkout traced yet: place an order and reload.</p>`
    : shown.map((t) => renderWaterfall(t, options))
}</section>`
}

/** One span placed in its trace's waterfall. */
interface Row {
  span: ReceivedSpan
  depth: number
}

/** The spans in tree order: each parent before its children, siblings by start time. */
export function waterfallRows(spans: readonly ReceivedSpan[]): Row[] {
  const ids = new Set(spans.map((s) => s.spanId))
  const children = new Map<string, ReceivedSpan[]>()
  const roots: ReceivedSpan[] = []
  for (const s of spans) {
    // A span whose parent never arrived (or lives in another process not yet exported) is a root.
    if (s.parentSpanId !== undefined && ids.has(s.parentSpanId)) {
      const list = children.get(s.parentSpanId) ?? []
      list.push(s)
      children.set(s.parentSpanId, list)
    } else roots.push(s)
  }
  const byStart = (a: ReceivedSpan, b: ReceivedSpan) => a.start - b.start || a.end - b.end
  const rows: Row[] = []
  const seen = new Set<string>()
  const visit = (s: ReceivedSpan, depth: number) => {
    if (seen.has(s.spanId)) return
    seen.add(s.spanId)
    rows.push({ span: s, depth })
    for (const c of (children.get(s.spanId) ?? []).sort(byStart)) visit(c, depth + 1)
  }
  for (const r of roots.sort(byStart)) visit(r, 0)
  return rows
}

/** Human duration: `840 µs`, `12.4 ms`, `1.32 s`. */
export function formatDuration(ms: number): string {
  if (ms < 1) return `${Math.round(ms * 1000)} µs`
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`
  return `${(ms / 1000).toFixed(2)} s`
}

const SERVICE_COLOURS: Record<string, string> = {
  gateway: '#5b6abf',
  account: '#8e6fb5',
  catalog: '#3f8f8a',
  cart: '#b58b2f',
  order: '#2f7fb5',
  inventory: '#4f9a4a',
  payment: '#c2721f',
  delivery: '#7a8a3a',
  provider: '#8a6a5a',
}
const ERROR_COLOUR = '#c62828'
const KIND_NAMES = ['', 'internal', 'server', 'client', 'producer', 'consumer']

// The chart's coordinates (it scales to the page's width): labels, then the time axis.
const WIDTH = 1200
const ROW = 18
const TOP = 22
const NAME_X = 118
const BAR_X = 470
const BAR_WIDTH = 640
const NAME_CHARS = 46

function clip(text: string, chars: number): string {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text
}

function renderWaterfall(trace: StoredTrace, options: WaterfallOptions): SafeHtml {
  const maxRows = options.maxRows ?? DEFAULT_WATERFALL_OPTIONS.maxRows
  const all = waterfallRows(trace.spans)
  const rows = all.slice(0, maxRows)
  const start = Math.min(...trace.spans.map((s) => s.start))
  const end = Math.max(...trace.spans.map((s) => s.end))
  const total = Math.max(end - start, 0.001)
  const processes = new Set(trace.spans.map((s) => s.instance)).size
  const failed = trace.spans.filter((s) => s.status.code === 2).length
  const height = TOP + rows.length * ROW + 4
  const x = (ms: number) => BAR_X + ((ms - start) / total) * BAR_WIDTH
  const ticks = [0, 0.25, 0.5, 0.75, 1]
  return html`<div class="waterfall" data-trace="${trace.traceId}">
<h3>Checkout <code>${trace.traceId.slice(0, 16)}</code> · ${formatDuration(total)} · ${trace.spans.length} spans · ${processes} processes${failed > 0 ? html` · <span class="bad">${failed} failed</span>` : ''}</h3>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${WIDTH} ${height}" width="100%" role="img" aria-label="Waterfall of trace ${trace.traceId}" font-family="system-ui, sans-serif" font-size="11">
${ticks.map(
  (
    f,
  ) => html`<line x1="${BAR_X + f * BAR_WIDTH}" y1="${TOP - 6}" x2="${BAR_X + f * BAR_WIDTH}" y2="${height}" stroke="#ddd"/>
<text x="${BAR_X + f * BAR_WIDTH}" y="${TOP - 9}" text-anchor="${f === 0 ? 'start' : f === 1 ? 'end' : 'middle'}" fill="#666">${formatDuration(f * total)}</text>`,
)}
${rows.map(({ span, depth }, i) => {
  const y = TOP + i * ROW
  const error = span.status.code === 2
  const colour = error ? ERROR_COLOUR : (SERVICE_COLOURS[span.service] ?? '#777')
  const barX = x(span.start)
  const barWidth = Math.max(((span.end - span.start) / total) * BAR_WIDTH, 1.5)
  const duration = formatDuration(span.end - span.start)
  const errorType = span.attributes['error.type']
  const detail = `${span.instance} · ${span.name} (${KIND_NAMES[span.kind] ?? 'span'}, ${span.scope}) · +${formatDuration(span.start - start)}, ${duration}${error ? ` · error ${String(errorType ?? '')} ${span.status.message ?? ''}` : ''}`
  return html`<g data-span="${span.spanId}"${error ? html` data-error` : ''}><title>${detail}</title>
${i % 2 === 0 ? html`<rect x="0" y="${y}" width="${WIDTH}" height="${ROW}" fill="#f5f6f8"/>` : ''}
<text x="4" y="${y + 13}" fill="${colour}" font-weight="600">${clip(span.instance, 17)}</text>
<text x="${NAME_X + Math.min(depth, 12) * 8}" y="${y + 13}" fill="${error ? ERROR_COLOUR : '#222'}">${clip(span.name, NAME_CHARS - Math.min(depth, 12))}</text>
<rect x="${barX.toFixed(1)}" y="${y + 4}" width="${barWidth.toFixed(1)}" height="${ROW - 8}" rx="2" fill="${colour}"/>
<text x="${WIDTH - 4}" y="${y + 13}" text-anchor="end" fill="${error ? ERROR_COLOUR : '#444'}">${duration}</text></g>`
})}
</svg>${
    all.length > rows.length || trace.droppedSpans > 0
      ? html`<p class="muted">${all.length - rows.length + trace.droppedSpans} more spans not shown.</p>`
      : ''
  }</div>`
}
