/**
 * The ops page's pieces without a browser: the charts drawn from Prometheus's samples (units,
 * gaps, a stopped replica's +Inf), the alerts list, and the readable forms of the services'
 * stats (no raw JSON in a cell).
 */
import { describe, expect, it } from 'vitest'
import { layoutInstances, METRICS_PORT_OFFSET } from '../src/config.js'
import { type RangeSeries, sampleValue } from '../src/platform/prometheus.js'
import { formatValue, linePath, OPS_CHARTS, renderAlerts, renderChart } from '../src/web/charts.js'
import { readable, readableBroker, readableDegrader, readableOutbox } from '../src/web/readable.js'

const spec = (name: string) => {
  const s = OPS_CHARTS.find((c) => c.name === name)
  if (!s) throw new Error(`no chart ${name}`)
  return s
}

describe('charts', () => {
  it('reads the samples Prometheus writes, +Inf and NaN included', () => {
    expect(sampleValue('0.25')).toBe(0.25)
    expect(sampleValue('+Inf')).toBe(Number.POSITIVE_INFINITY)
    expect(sampleValue('-Inf')).toBe(Number.NEGATIVE_INFINITY)
    expect(sampleValue('NaN')).toBeNaN()
  })

  it('formats each unit for a reader', () => {
    expect(formatValue(12.345, 'rate')).toBe('12.3/s')
    expect(formatValue(0.5, 'ratio')).toBe('50.0%')
    expect(formatValue(1, 'ratio')).toBe('100%')
    expect(formatValue(0.0123, 'seconds')).toBe('12 ms')
    expect(formatValue(0.0004, 'seconds')).toBe('400 µs')
    expect(formatValue(2.5, 'seconds')).toBe('2.50 s')
    expect(formatValue(Number.POSITIVE_INFINITY, 'seconds')).toBe('stopped')
    expect(formatValue(2, 'state')).toBe('open')
    expect(formatValue(1, 'state')).toBe('half-open')
    expect(formatValue(0, 'state')).toBe('closed')
    expect(formatValue(0, 'rate')).toBe('0')
    expect(formatValue(Number.NaN, 'count')).toBe('–')
  })

  it('draws a line with a gap where a sample is missing and +Inf at the top', () => {
    const d = linePath(
      [
        [0, 0],
        [10, 1],
        [20, Number.NaN],
        [30, Number.POSITIVE_INFINITY],
        [40, 0.5],
      ],
      0,
      40,
      1,
    )
    const moves = d.split(' ').filter((p) => p.startsWith('M') || p.startsWith('L'))
    expect(moves.map((p) => p[0])).toEqual(['M', 'L', 'M', 'L'])
    // y of 1 (the top, 10) and of +Inf are the same; 0 is the bottom (130).
    expect(d).toMatch(/^M52\.0 130\.0 L[\d.]+ 10\.0 M[\d.]+ 10\.0 L392\.0 70\.0$/)
  })

  it('renders a chart with one line per series, the busiest first, and their last values', () => {
    const series: RangeSeries[] = [
      {
        metric: { job: 'catalog' },
        values: [
          [100, 1],
          [105, 2],
        ],
      },
      {
        metric: { job: 'order' },
        values: [
          [100, 5],
          [105, 8],
        ],
      },
      { metric: { job: 'idle' }, values: [[100, Number.NaN]] },
    ]
    const out = renderChart(spec('request-rate'), series, { start: 100, end: 105 }).value
    expect(out).toContain('data-chart="request-rate"')
    expect(out).toContain('data-series="2"')
    expect(out.match(/<path data-line=/g)).toHaveLength(2)
    expect(out.indexOf('data-line="order"')).toBeLessThan(out.indexOf('data-line="catalog"'))
    expect(out).toContain('order <b>8.00/s</b>')
    expect(out).not.toContain('idle')
    const failed = renderChart(spec('p99'), new Error('connect ECONNREFUSED'), {
      start: 0,
      end: 300,
    }).value
    expect(failed).toContain('data-series="0"')
    expect(failed).toContain('Prometheus unavailable: connect ECONNREFUSED')
  })

  it('lists firing alerts first, escaped, or says none fires', () => {
    const out = renderAlerts(
      [
        {
          labels: { alertname: 'ReplicaStale', severity: 'page' },
          annotations: { summary: 'pending one' },
          state: 'pending',
          activeAt: '2026-12-07T12:00:00Z',
          value: '6',
        },
        {
          labels: { alertname: 'BreakerOpen', severity: 'page' },
          annotations: { summary: 'Breaker <payment-provider> is open' },
          state: 'firing',
          activeAt: '2026-12-07T12:00:01Z',
          value: '2',
        },
      ],
      'http://127.0.0.1:9090',
    ).value
    expect(out.indexOf('BreakerOpen')).toBeLessThan(out.indexOf('ReplicaStale'))
    expect(out).toContain('Breaker &lt;payment-provider&gt; is open')
    expect(renderAlerts([], 'http://127.0.0.1:9090').value).toContain('No alert firing')
  })
})

describe('readable stats', () => {
  it('writes counters, nested objects, the degrader, the outbox and the broker as text', () => {
    expect(readable({ handled: 3, skipped: 0, failed: 1 })).toBe('handled 3 · skipped 0 · failed 1')
    expect(readable({ placed: 1200, l2Errors: 2, connected: { publisher: true } })).toBe(
      'placed 1,200 · L2 errors 2 · connected (publisher yes)',
    )
    expect(
      readableDegrader({
        features: {
          recommendations: { level: 'off', breakerOpen: true },
          reviews: { level: 'full', breakerOpen: false },
        },
        shedSteps: 1,
        eventLoopDelayMs: 19.36,
        inFlight: 3,
        paymentBreaker: 'open',
      }),
    ).toBe(
      'features: recommendations off (breaker open), reviews full · 1 shed steps · event loop delay 19 ms · 3 in flight · payment breaker open',
    )
    expect(
      readableOutbox({
        a: { sent: 5, failed: 0, deferred: 0, batches: 2, pending: 1 },
        b: { sent: 0, failed: 1, deferred: 0, batches: 0, pending: 0 },
      }),
    ).toBe(
      'shard a: 5 sent, 1 pending, 0 failed, 0 deferred; shard b: 0 sent, 0 pending, 1 failed, 0 deferred',
    )
    const broker = readableBroker({
      published: 4,
      confirmed: 4,
      consumed: 2,
      acked: 2,
      retried: 1,
      deadLettered: 0,
      reconnects: { publisher: 0, consumer: 0 },
      connected: { publisher: true, consumer: false },
    })
    expect(broker).toBe(
      'published 4 · confirmed 4 · consumed 2 · acked 2 · retried 1 · dead lettered 0 · connected: publisher yes, consumer no',
    )
    for (const text of [broker, readable({ a: { b: { c: 1 } } })]) expect(text).not.toMatch(/[{}"]/)
  })
})

describe('port layout', () => {
  it('gives every instance a port and a metrics port of its own, apart from the fixed ones', () => {
    const base = 20_000
    const layout = layoutInstances(base, { catalog: 3, cart: 2, account: 2, order: 16 })
    const ports = layout.flatMap((i) => [i.port, i.metricsPort])
    // The control port, Prometheus and the supervisor's metrics: base + 1, + 2, + 3.
    expect(new Set([...ports, base + 1, base + 2, base + 3]).size).toBe(ports.length + 3)
    expect(Math.min(...layout.map((i) => i.metricsPort))).toBe(base + METRICS_PORT_OFFSET)
    expect(
      Math.max(...layout.filter((i) => i.service !== 'gateway').map((i) => i.port)),
    ).toBeLessThan(base + METRICS_PORT_OFFSET)
    // Forty fit (ports base + 10 to base + 49); one more would reach the metrics ports.
    expect(() =>
      layoutInstances(base, { catalog: 30, cart: 2, account: 2, order: 2 }),
    ).not.toThrow()
    expect(() => layoutInstances(base, { catalog: 31, cart: 2, account: 2, order: 2 })).toThrow(
      'too many instances (41)',
    )
  })
})
