import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  circuitBreaker,
  createDegrader,
  type Degrader,
  InvalidArgumentError,
} from '../src/index.js'

const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()))
})

function shop(maxInFlight = 10) {
  const recommender = circuitBreaker({ name: 'recommender', volumeThreshold: 1 })
  const degrader = createDegrader({
    features: {
      checkout: { priority: 100, minLevel: 'full' },
      reviews: { priority: 20, minLevel: 'degraded' },
      recommendations: { priority: 10, breakers: [recommender] },
    },
    overload: { maxInFlight, interval: 60_000, maxEventLoopDelay: 10_000 },
  })
  open.push(degrader, recommender)
  return { degrader, recommender }
}

function levels(d: Degrader<'checkout' | 'reviews' | 'recommendations'>) {
  return {
    recommendations: d.level('recommendations'),
    reviews: d.level('reviews'),
    checkout: d.level('checkout'),
  }
}

describe('Degrader', () => {
  it('starts with every feature at full', () => {
    const { degrader } = shop()
    expect(levels(degrader)).toEqual({ recommendations: 'full', reviews: 'full', checkout: 'full' })
  })

  it('sheds in priority order under overload, one step per sample, and never below minLevel', () => {
    const { degrader } = shop(2)
    const changes: string[] = []
    degrader.on('level-changed', (c) => changes.push(`${c.feature}:${c.to}:${c.reason}`))
    const ends = [degrader.begin(), degrader.begin(), degrader.begin()]
    for (let i = 0; i < 5; i++) degrader.evaluate()
    expect(changes).toEqual([
      'recommendations:degraded:overload',
      'recommendations:off:overload',
      'reviews:degraded:overload',
    ])
    expect(levels(degrader)).toEqual({
      recommendations: 'off',
      reviews: 'degraded',
      checkout: 'full',
    })
    expect(degrader.stats()).toMatchObject({ inFlight: 3, shedSteps: 3 })
    // recovery undoes the steps in reverse order, only below the hysteresis mark
    for (const end of ends) end()
    degrader.evaluate()
    expect(changes.at(-1)).toBe('reviews:full:recovered')
    degrader.evaluate()
    degrader.evaluate()
    expect(levels(degrader)).toEqual({ recommendations: 'full', reviews: 'full', checkout: 'full' })
  })

  it('drops a feature when its breaker opens and restores it when it closes', async () => {
    const { degrader, recommender } = shop()
    await recommender.execute(() => Promise.reject(new Error('down'))).catch(() => {})
    expect(recommender.state).toBe('open')
    expect(degrader.isEnabled('recommendations')).toBe(false)
    expect(degrader.stats().features.recommendations).toMatchObject({
      breakerOpen: true,
      level: 'off',
    })
    recommender.reset()
    expect(degrader.isEnabled('recommendations')).toBe(true)
  })

  it('lets an operator override any feature, over breakers and overload', () => {
    const { degrader, recommender } = shop()
    degrader.override('checkout', 'off')
    expect(degrader.level('checkout')).toBe('off')
    recommender.trip()
    degrader.override('recommendations', 'full')
    expect(degrader.level('recommendations')).toBe('full')
    degrader.clearOverride('recommendations')
    expect(degrader.level('recommendations')).toBe('off')
  })

  it('samples real event-loop delay: a blocked loop sheds the lowest priority first', async () => {
    const degrader = createDegrader({
      features: { recommendations: { priority: 1 }, checkout: { priority: 9, minLevel: 'full' } },
      overload: { maxEventLoopDelay: 50, interval: 60_000 },
    })
    open.push(degrader)
    await new Promise((r) => setTimeout(r, 30))
    const until = Date.now() + 150
    while (Date.now() < until) {
      // block the event loop
    }
    await new Promise((r) => setTimeout(r, 20))
    degrader.evaluate()
    expect(degrader.stats().eventLoopDelayMs).toBeGreaterThan(50)
    expect(degrader.level('recommendations')).toBe('degraded')
    expect(degrader.level('checkout')).toBe('full')
  })

  it('throws on unknown features and invalid options, naming them', () => {
    const { degrader } = shop()
    expect(() => degrader.level('typo' as 'checkout')).toThrow(InvalidArgumentError)
    expect(() => createDegrader({ features: {} })).toThrow('invalid option "features"')
    expect(() => createDegrader({ features: { a: { priority: Number.NaN } } })).toThrow(
      'invalid option "features.a.priority"',
    )
    expect(() =>
      createDegrader({ features: { a: { priority: 1, minLevel: 'half' as 'off' } } }),
    ).toThrow('invalid option "features.a.minLevel"')
    expect(() =>
      createDegrader({ features: { a: { priority: 1 } }, overload: { interval: -1 } }),
    ).toThrow('invalid option "overload.interval"')
  })

  it('holds no timer without overload watching, and releases it on close', async () => {
    const setIntervalSpy = vi.spyOn(globalThis, 'setInterval')
    const clearIntervalSpy = vi.spyOn(globalThis, 'clearInterval')
    try {
      const quiet = createDegrader({ features: { a: { priority: 1 } }, overload: false })
      expect(setIntervalSpy).not.toHaveBeenCalled()
      const watching = createDegrader({ features: { a: { priority: 1 } } })
      expect(setIntervalSpy).toHaveBeenCalledTimes(1)
      const timer = setIntervalSpy.mock.results[0]?.value
      await watching.close()
      await quiet.close()
      expect(clearIntervalSpy).toHaveBeenCalledWith(timer)
    } finally {
      setIntervalSpy.mockRestore()
      clearIntervalSpy.mockRestore()
    }
  })
})
