import fc from 'fast-check'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  type Balancer,
  createBalancer,
  createSeededRandom,
  DuplicateEndpointError,
  EmptyEndpointsError,
  InvalidArgumentError,
  InvalidWeightError,
  NoEndpointAvailableError,
  STRATEGIES,
  UnknownEndpointError,
} from '../src/index.js'

const ids = (n: number) => Array.from({ length: n }, (_, i) => `e${i}`)

function countPicks<T>(
  b: Balancer<T>,
  n: number,
  key?: (i: number) => string,
): Map<string, number> {
  const counts = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const id = b.pick(key?.(i)).id
    counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  return counts
}

afterEach(() => {
  vi.useRealTimers()
})

describe('createBalancer', () => {
  describe('bad input', () => {
    it('rejects an empty endpoint list with a typed error naming the option', () => {
      expect(() => createBalancer({ endpoints: [] })).toThrow(EmptyEndpointsError)
      expect(() => createBalancer({ endpoints: [] })).toThrow(/"endpoints"/)
    })

    it('rejects duplicate endpoints, naming the id', () => {
      const error = (() => {
        try {
          createBalancer({ endpoints: ['a', 'b', 'a'] })
        } catch (e) {
          return e
        }
        return undefined
      })()
      expect(error).toBeInstanceOf(DuplicateEndpointError)
      expect((error as DuplicateEndpointError).id).toBe('a')
      expect((error as Error).message).toContain('"a"')
    })

    it('rejects invalid weights, naming the endpoint and the weight', () => {
      for (const weight of [
        0,
        -1,
        Number.NaN,
        Number.POSITIVE_INFINITY,
        '2' as unknown as number,
      ]) {
        expect(() => createBalancer({ endpoints: [{ id: 'x', weight }] })).toThrow(
          InvalidWeightError,
        )
      }
      expect(() => createBalancer({ endpoints: [{ id: 'x', weight: -3 }] })).toThrow(/"x".*-3/)
      const b = createBalancer({ endpoints: ['a'] })
      expect(() => b.setWeight('a', 0)).toThrow(InvalidWeightError)
      expect(() => b.setWeight('nope', 1)).toThrow(UnknownEndpointError)
      expect(() => b.add('a')).toThrow(DuplicateEndpointError)
    })

    it('rejects unknown strategies and out-of-range options, naming the option', () => {
      expect(() => createBalancer({ endpoints: ['a'], strategy: 'fastest' as never })).toThrow(
        /"strategy"/,
      )
      expect(() => createBalancer({ endpoints: ['a'], panicThreshold: 2 })).toThrow(
        /"panicThreshold"/,
      )
      expect(() => createBalancer({ endpoints: ['a'], balanceFactor: 1 })).toThrow(
        /"balanceFactor"/,
      )
      expect(() =>
        createBalancer({ endpoints: ['a'], outlierDetection: { consecutiveFailures: 0 } }),
      ).toThrow(/"outlierDetection.consecutiveFailures"/)
      expect(() => createBalancer({ endpoints: [''] })).toThrow(InvalidArgumentError)
    })
  })

  describe('weighted-round-robin', () => {
    it('interleaves like nginx: weights {5,1,1} give a a b a c a a', () => {
      const b = createBalancer({
        strategy: 'weighted-round-robin',
        endpoints: [{ id: 'a', weight: 5 }, { id: 'b' }, { id: 'c' }],
      })
      expect(Array.from({ length: 14 }, () => b.pick().id).join(' ')).toBe(
        'a a b a c a a a a b a c a a',
      )
    })

    it('gives each endpoint exactly its weight per cycle, for any integer weights', () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 8 }),
          (weights) => {
            const b = createBalancer({
              strategy: 'weighted-round-robin',
              endpoints: weights.map((weight, i) => ({ id: `e${i}`, weight })),
            })
            const total = weights.reduce((s, w) => s + w, 0)
            const counts = countPicks(b, total * 3)
            weights.forEach((w, i) => {
              expect(counts.get(`e${i}`)).toBe(w * 3)
            })
          },
        ),
      )
    })
  })

  describe('round-robin', () => {
    it('visits every endpoint in turn', () => {
      const b = createBalancer({ strategy: 'round-robin', endpoints: ids(3) })
      expect(Array.from({ length: 6 }, () => b.pick().id)).toEqual([
        'e0',
        'e1',
        'e2',
        'e0',
        'e1',
        'e2',
      ])
    })
  })

  describe('random', () => {
    it('spreads picks in proportion to weight (seeded)', () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 2, maxLength: 6 }),
          fc.integer(),
          (weights, seed) => {
            const b = createBalancer({
              strategy: 'random',
              random: createSeededRandom(seed),
              endpoints: weights.map((weight, i) => ({ id: `e${i}`, weight })),
            })
            const n = 20_000
            const total = weights.reduce((s, w) => s + w, 0)
            const counts = countPicks(b, n)
            weights.forEach((w, i) => {
              expect(Math.abs((counts.get(`e${i}`) ?? 0) / n - w / total)).toBeLessThan(0.03)
            })
          },
        ),
        { numRuns: 20 },
      )
    })
  })

  describe('least-request', () => {
    it('sends new requests away from the endpoint with requests in flight', () => {
      const b = createBalancer({
        strategy: 'least-request',
        endpoints: ['a', 'b'],
        random: createSeededRandom(3),
      })
      const a = b.get('a')!
      for (let i = 0; i < 5; i++) b.begin(a)
      const counts = countPicks(b, 100)
      expect(counts.get('b')).toBe(100)
    })

    it('is fair when all endpoints are idle: every endpoint gets a share (power of two choices)', () => {
      const b = createBalancer({
        strategy: 'least-request',
        endpoints: ids(8),
        random: createSeededRandom(9),
      })
      const counts = countPicks(b, 8000)
      for (const id of ids(8)) expect(counts.get(id)).toBeGreaterThan(700)
    })
  })

  describe('peak-ewma', () => {
    it('avoids an endpoint whose latency jumped, and probes it again once its cost decays', () => {
      let now = 0
      const b = createBalancer({
        strategy: 'peak-ewma',
        endpoints: ['fast', 'slow'],
        clock: () => now,
        random: createSeededRandom(1),
        ewmaDecay: 1000,
      })
      const fast = b.get('fast')!
      const slow = b.get('slow')!
      b.end(fast, b.begin(fast) - 10, true) // 10 ms
      b.end(slow, b.begin(slow) - 500, true) // 500 ms
      expect(countPicks(b, 50).get('slow')).toBeUndefined()
      expect(b.stats().endpoints.find((e) => e.id === 'slow')!.latencyEwmaMs).toBeCloseTo(500)
      // The fast endpoint keeps answering in 10 ms; the slow one's cost decays until it is probed.
      let firstProbe = -1
      for (let step = 0; step < 100 && firstProbe < 0; step++) {
        now += 100
        const ep = b.pick()
        if (ep.id === 'slow') firstProbe = now
        b.end(ep, b.begin(ep) - 10, true)
      }
      // 500 ms decays below 10 ms after ln(50) ≈ 3.9 decay times.
      expect(firstProbe).toBeGreaterThan(3000)
      expect(firstProbe).toBeLessThan(6000)
    })
  })

  describe('consistent-hash', () => {
    it('maps a key to the same endpoint, and to the next one on the ring while its owner is down', () => {
      const b = createBalancer({
        strategy: 'consistent-hash',
        endpoints: ids(5),
        outlierDetection: false,
        panicThreshold: 0,
      })
      const owner = b.pick('user:42').id
      for (let i = 0; i < 10; i++) expect(b.pick('user:42').id).toBe(owner)
      b.setHealthy(owner, false)
      const fallback = b.pick('user:42').id
      expect(fallback).not.toBe(owner)
      b.setHealthy(owner, true)
      expect(b.pick('user:42').id).toBe(owner)
    })
  })

  describe('bounded-load', () => {
    it('caps an endpoint at ⌈factor × (in flight + 1) / n⌉ even when every key hashes to it', () => {
      const b = createBalancer({ strategy: 'bounded-load', endpoints: ids(4), balanceFactor: 1.25 })
      for (let i = 0; i < 400; i++) {
        const ep = b.pick('hot-key')
        const total = b.stats().inFlight
        expect(ep.inFlight).toBeLessThan(Math.ceil((1.25 * (total + 1)) / 4))
        b.begin(ep)
      }
      const loads = b.endpoints().map((e) => e.inFlight)
      expect(Math.max(...loads)).toBeLessThanOrEqual(Math.ceil((1.25 * 400) / 4))
    })

    it('keeps a key on its ring owner while loads are even', () => {
      const b = createBalancer({ strategy: 'bounded-load', endpoints: ids(4) })
      const c = createBalancer({ strategy: 'consistent-hash', endpoints: ids(4) })
      for (let i = 0; i < 100; i++) expect(b.pick(`k${i}`).id).toBe(c.pick(`k${i}`).id)
    })
  })

  describe('pick with exclude', () => {
    it('never returns an excluded endpoint, for every strategy', () => {
      for (const strategy of STRATEGIES) {
        const b = createBalancer({ strategy, endpoints: ids(3) })
        const [e0, e1] = b.endpoints()
        for (let i = 0; i < 50; i++) {
          expect(b.pick(`k${i}`, e0).id).not.toBe('e0')
          expect(b.pick(`k${i}`, [e0!, e1!]).id).toBe('e2')
        }
        expect(() => b.pick('k', b.endpoints())).toThrow(NoEndpointAvailableError)
      }
    })
  })

  describe('run-time changes', () => {
    it('adds, removes and re-weights endpoints while picking', () => {
      const b = createBalancer({
        strategy: 'weighted-round-robin',
        endpoints: ['a', 'b'],
        slowStart: false,
      })
      const events: string[] = []
      b.on('endpoint-added', ({ endpoint }) => events.push(`+${endpoint.id}`))
      b.on('endpoint-removed', ({ endpoint }) => events.push(`-${endpoint.id}`))
      b.on('weight-changed', ({ endpoint, previous }) =>
        events.push(`${endpoint.id}:${previous}->${endpoint.weight}`),
      )
      b.add({ id: 'c', weight: 2 })
      expect(countPicks(b, 40).get('c')).toBe(20)
      b.remove('a')
      expect(countPicks(b, 30).get('a')).toBeUndefined()
      b.setWeight('b', 2)
      expect(countPicks(b, 40).get('b')).toBe(20)
      expect(events).toEqual(['+c', '-a', 'b:1->2'])
      expect(b.size).toBe(2)
    })
  })
})

describe('outlier detection', () => {
  it('ejects after consecutive failures, for a time that grows with each ejection, then restores', () => {
    vi.useFakeTimers()
    const b = createBalancer({
      strategy: 'round-robin',
      endpoints: ids(4),
      clock: () => Date.now(),
      slowStart: false,
      outlierDetection: { consecutiveFailures: 3, baseEjectionTime: 1000, maxEjectionShare: 0.5 },
    })
    const ejected: number[] = []
    const restored: string[] = []
    b.on('ejected', (e) => ejected.push(e.durationMs))
    b.on('restored', (e) => restored.push(`${e.endpoint.id}:${e.reason}`))
    const e0 = b.get('e0')!
    const fail = () => b.end(e0, b.begin(e0), false)
    fail()
    fail()
    expect(e0.ejected).toBe(false)
    fail()
    expect(e0.ejected).toBe(true)
    expect(countPicks(b, 30).get('e0')).toBeUndefined()
    vi.advanceTimersByTime(999)
    expect(e0.ejected).toBe(true)
    vi.advanceTimersByTime(1)
    expect(e0.ejected).toBe(false)
    fail()
    fail()
    fail()
    vi.advanceTimersByTime(1000)
    expect(e0.ejected).toBe(true)
    vi.advanceTimersByTime(1000)
    expect(e0.ejected).toBe(false)
    expect(ejected).toEqual([1000, 2000])
    expect(restored).toEqual(['e0:ejection-expired', 'e0:ejection-expired'])
    void b.close()
  })

  it('ejects on a failure rate over the window', () => {
    const b = createBalancer({
      strategy: 'round-robin',
      endpoints: ids(2),
      outlierDetection: {
        consecutiveFailures: 100,
        failureRateThreshold: 0.5,
        failureRateMinimumRequests: 10,
      },
    })
    const e0 = b.get('e0')!
    for (let i = 0; i < 10; i++) b.end(e0, b.begin(e0), i % 2 === 0)
    expect(e0.ejected).toBe(true)
    void b.close()
  })

  it('never ejects more than the maximum share (but always one)', () => {
    const b = createBalancer({
      strategy: 'round-robin',
      endpoints: ids(10),
      outlierDetection: { consecutiveFailures: 1, maxEjectionShare: 0.2 },
    })
    for (const e of b.endpoints()) b.end(e, b.begin(e), false)
    expect(b.endpoints().filter((e) => e.ejected)).toHaveLength(2)
    const two = createBalancer({ endpoints: ids(2), outlierDetection: { consecutiveFailures: 1 } })
    for (const e of two.endpoints()) two.end(e, two.begin(e), false)
    expect(two.endpoints().filter((e) => e.ejected)).toHaveLength(1)
    void b.close()
    void two.close()
  })

  it('is returned early by a passing active health check', () => {
    const b = createBalancer({ endpoints: ids(2), outlierDetection: { consecutiveFailures: 1 } })
    const e0 = b.get('e0')!
    b.setHealthy('e0', false)
    b.setHealthy('e0', true)
    b.end(e0, b.begin(e0), false)
    expect(e0.ejected).toBe(true)
    const restored: string[] = []
    b.on('restored', (e) => restored.push(e.reason))
    b.setHealthy('e0', false)
    b.setHealthy('e0', true)
    expect(e0.ejected).toBe(false)
    expect(restored).toEqual(['health-check'])
    void b.close()
  })
})

describe('panic threshold', () => {
  it('spreads over all endpoints when too few are healthy, and fails at once when none is', () => {
    const b = createBalancer({ strategy: 'round-robin', endpoints: ids(4), panicThreshold: 0.5 })
    const panics: boolean[] = []
    b.on('panic-changed', (e) => panics.push(e.active))
    b.setHealthy('e0', false)
    b.setHealthy('e1', false)
    expect(b.panicking).toBe(false)
    expect(new Set(countPicks(b, 8).keys())).toEqual(new Set(['e2', 'e3']))
    b.setHealthy('e2', false)
    expect(b.panicking).toBe(true)
    expect(new Set(countPicks(b, 8).keys())).toEqual(new Set(ids(4)))
    b.setHealthy('e3', false)
    // At once: pick() throws synchronously, it never waits for an endpoint to come back.
    expect(() => b.pick()).toThrow(NoEndpointAvailableError)
    b.setHealthy('e3', true)
    b.setHealthy('e2', true)
    expect(b.panicking).toBe(false)
    expect(panics).toEqual([true, false, true, false])
    expect(b.stats().noEndpoint).toBe(1)
  })
})

describe('slow start', () => {
  it('ramps a recovered endpoint from the floor to its full weight over the window', () => {
    vi.useFakeTimers()
    const b = createBalancer({
      strategy: 'weighted-round-robin',
      endpoints: [
        { id: 'a', weight: 10 },
        { id: 'b', weight: 10 },
      ],
      clock: () => Date.now(),
      slowStart: { window: 1000, minWeightShare: 0.1 },
    })
    const a = b.get('a')!
    expect(a.effectiveWeight).toBe(10)
    b.setHealthy('a', false)
    b.setHealthy('a', true)
    expect(a.effectiveWeight).toBeCloseTo(1)
    expect(b.stats().endpoints[0]!.slowStarting).toBe(true)
    const early = countPicks(b, 110).get('a') ?? 0
    expect(early).toBe(10)
    vi.advanceTimersByTime(500)
    expect(a.effectiveWeight).toBeCloseTo(5)
    vi.advanceTimersByTime(600)
    expect(a.effectiveWeight).toBe(10)
    expect(b.stats().endpoints[0]!.slowStarting).toBe(false)
    void b.close()
  })

  it('applies to endpoints added at run time', () => {
    const b = createBalancer({ strategy: 'least-request', endpoints: ['a'] })
    const c = b.add('c')
    expect(c.effectiveWeight).toBeLessThan(c.weight)
    void b.close()
  })
})

describe('stats and events', () => {
  it('counts picks, successes and failures per endpoint, and emits picked while listened to', () => {
    const b = createBalancer({
      strategy: 'round-robin',
      endpoints: ['a', 'b'],
      outlierDetection: false,
    })
    const picked: string[] = []
    const off = b.on('picked', ({ endpoint }) => picked.push(endpoint.id))
    const a = b.pick()
    b.end(a, b.begin(a), true)
    const bb = b.pick()
    b.end(bb, b.begin(bb), false)
    off()
    b.pick()
    expect(picked).toEqual(['a', 'b'])
    const s = b.stats()
    expect(s.endpoints.map((e) => [e.id, e.picks, e.succeeded, e.failed])).toEqual([
      ['a', 2, 1, 0],
      ['b', 1, 0, 1],
    ])
    expect(s.inFlight).toBe(0)
  })
})
