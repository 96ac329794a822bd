import { describe, expect, it } from 'vitest'
import { createSeededRandom, InvalidArgumentError, simulate } from '../src/index.js'

describe('simulate', () => {
  it('is reproducible: the same seed gives the same figures', () => {
    const a = simulate({ strategy: 'least-request', duration: 5000, seed: 7 })
    const b = simulate({ strategy: 'least-request', duration: 5000, seed: 7 })
    expect(a).toEqual(b)
    expect(simulate({ strategy: 'least-request', duration: 5000, seed: 8 })).not.toEqual(a)
  })

  it('keeps P2C peak-EWMA p99 within 1.2x of the all-healthy p99 with one backend 10x slow', () => {
    const healthy = simulate({ strategy: 'peak-ewma', slowFactor: 1 })
    const degraded = simulate({ strategy: 'peak-ewma' })
    expect(degraded.p99).toBeLessThanOrEqual(1.2 * healthy.p99)
    expect(degraded.slowShare).toBeLessThan(0.01)
  })

  it('shows round robin’s queue growing without bound behind the slow backend', () => {
    const healthy = simulate({ strategy: 'round-robin', slowFactor: 1 })
    const degraded = simulate({ strategy: 'round-robin' })
    expect(degraded.p99).toBeGreaterThan(20 * healthy.p99)
    expect(degraded.slowShare).toBeCloseTo(0.1, 2)
  })

  it('rejects invalid options', () => {
    expect(() => simulate({ strategy: 'peak-ewma', utilisation: 1.5 })).toThrow(
      InvalidArgumentError,
    )
    expect(() => simulate({ strategy: 'nope' as never })).toThrow(/"strategy"/)
  })
})

describe('createSeededRandom', () => {
  it('yields the same sequence for a seed, in [0, 1)', () => {
    const a = createSeededRandom(5)
    const b = createSeededRandom(5)
    for (let i = 0; i < 1000; i++) {
      const x = a()
      expect(x).toBe(b())
      expect(x).toBeGreaterThanOrEqual(0)
      expect(x).toBeLessThan(1)
    }
  })
})
