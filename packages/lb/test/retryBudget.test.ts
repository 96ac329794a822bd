import { describe, expect, it } from 'vitest'
import { createRetryBudget, InvalidArgumentError } from '../src/index.js'

describe('RetryBudget', () => {
  it('allows the floor of retries even with no traffic, then refuses', () => {
    const now = 0
    const budget = createRetryBudget({
      ratio: 0.2,
      minPerSecond: 1,
      window: 5000,
      clock: () => now,
    })
    let granted = 0
    for (let i = 0; i < 20; i++) if (budget.tryRetry()) granted++
    expect(granted).toBe(5)
    expect(budget.stats().refused).toBe(15)
  })

  it('caps retries at the ratio of recent requests plus the floor', () => {
    let now = 0
    const budget = createRetryBudget({
      ratio: 0.2,
      minPerSecond: 0,
      window: 10_000,
      clock: () => now,
    })
    for (let i = 0; i < 1000; i++) budget.recordRequest()
    let granted = 0
    for (let i = 0; i < 1000; i++) if (budget.tryRetry()) granted++
    expect(granted).toBe(200)
    // Once the window has passed, the old requests no longer pay for retries.
    now += 11_000
    expect(budget.tryRetry()).toBe(false)
    expect(budget.stats()).toMatchObject({ requests: 0, retries: 0, available: 0 })
  })

  it('rejects invalid options, naming them', () => {
    expect(() => createRetryBudget({ ratio: -1 })).toThrow(InvalidArgumentError)
    expect(() => createRetryBudget({ window: 0 })).toThrow(/"window"/)
  })
})
