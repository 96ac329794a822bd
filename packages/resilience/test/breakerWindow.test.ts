import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import { createDegrader } from '../src/index.js'
import { BreakerWindow } from '../src/internal/breakerWindow.js'

/** Fixed seed: a failing run replays. */
const SEED = 16

describe('BreakerWindow', () => {
  it('property: a count window holds exactly the last N outcomes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.boolean(), { maxLength: 200 }),
        (size, outcomes) => {
          const w = new BreakerWindow({ type: 'count', size }, 0)
          for (const failed of outcomes) w.increment(failed ? 'failures' : 'successes', 1)
          const last = outcomes.slice(-size)
          expect(w.windowCounts()).toEqual({
            calls: last.length,
            failures: last.filter(Boolean).length,
          })
        },
      ),
      { seed: SEED, numRuns: 200 },
    )
  })

  it('property: a time window holds exactly the outcomes of its live buckets', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.boolean()), { maxLength: 200 }),
        (steps) => {
          let now = 1_000_000
          const duration = 1000
          const buckets = 10
          const w = new BreakerWindow({ type: 'time', duration, buckets }, 0, () => now)
          const log: [number, boolean][] = []
          for (const [gap, failed] of steps) {
            now += gap
            w.increment(failed ? 'failures' : 'successes', 1)
            log.push([now, failed])
          }
          // live buckets: the current one and the nine before it
          const bucketMs = duration / buckets
          const oldest = (Math.floor(now / bucketMs) - buckets + 1) * bucketMs
          const live = log.filter(([t]) => t >= oldest)
          expect(w.windowCounts()).toEqual({
            calls: live.length,
            failures: live.filter(([, f]) => f).length,
          })
        },
      ),
      { seed: SEED, numRuns: 200 },
    )
  })

  it('keeps latency samples only when asked, and reports percentiles on demand', () => {
    const off = new BreakerWindow({ type: 'count', size: 10 }, 0)
    off.increment('successes', 5)
    expect(off.latency()).toBeUndefined()
    const on = new BreakerWindow({ type: 'count', size: 10 }, 100)
    for (let i = 1; i <= 100; i++) on.increment('successes', i)
    expect(on.latency()).toEqual({ mean: 50.5, p50: 50, p90: 90, p99: 99 })
  })
})

describe('Degrader.track', () => {
  it('counts work in flight until it settles, even when it throws', async () => {
    const d = createDegrader({ features: { a: { priority: 1 } }, overload: false })
    let release!: () => void
    const running = d.track(() => new Promise<void>((r) => (release = r)))
    const failing = d.track(() => Promise.reject(new Error('x'))).catch(() => {})
    expect(d.stats().inFlight).toBe(2)
    await failing
    expect(d.stats().inFlight).toBe(1)
    release()
    await running
    expect(d.stats().inFlight).toBe(0)
    const end = d.begin()
    end()
    end()
    expect(d.stats().inFlight).toBe(0)
    await d.close()
    vi.restoreAllMocks()
  })
})
