import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  createBalancedClient,
  createBalancer,
  createHealthChecker,
  createProxy,
  createRetryBudget,
  type Duration,
  InvalidArgumentError,
  simulate,
} from '../src/index.js'

const origin = 'http://127.0.0.1:1'

/** Each factory with one duration option set to `value`, by the option's path in messages. */
const factories: Record<string, (value: unknown) => { close?: () => Promise<void> } | undefined> = {
  ewmaDecay: (v) => createBalancer({ endpoints: ['a'], ewmaDecay: v as Duration }),
  failurePenalty: (v) => createBalancer({ endpoints: ['a'], failurePenalty: v as Duration }),
  'outlierDetection.failureRateWindow': (v) =>
    createBalancer({ endpoints: ['a'], outlierDetection: { failureRateWindow: v as Duration } }),
  'outlierDetection.baseEjectionTime': (v) =>
    createBalancer({ endpoints: ['a'], outlierDetection: { baseEjectionTime: v as Duration } }),
  'outlierDetection.maxEjectionTime': (v) =>
    createBalancer({ endpoints: ['a'], outlierDetection: { maxEjectionTime: v as Duration } }),
  'slowStart.window': (v) =>
    createBalancer({ endpoints: ['a'], slowStart: { window: v as Duration } }),
  interval: (v) =>
    createHealthChecker({
      balancer: createBalancer({ endpoints: ['a'] }),
      check: () => true,
      interval: v as Duration,
    }),
  timeout: (v) =>
    createHealthChecker({
      balancer: createBalancer({ endpoints: ['a'] }),
      check: () => true,
      timeout: v as Duration,
    }),
  window: (v) => {
    createRetryBudget({ window: v as Duration })
    return undefined
  },
  connectTimeout: (v) =>
    createProxy({ routes: [{ upstream: [origin] }], connectTimeout: v as Duration }),
  headersTimeout: (v) =>
    createBalancedClient({ endpoints: [origin], headersTimeout: v as Duration }),
  bodyTimeout: (v) => createBalancedClient({ endpoints: [origin], bodyTimeout: v as Duration }),
  keepAliveTimeout: (v) =>
    createProxy({ routes: [{ upstream: [origin] }], keepAliveTimeout: v as Duration }),
  drainTimeout: (v) =>
    createProxy({ routes: [{ upstream: [origin] }], drainTimeout: v as Duration }),
  duration: (v) => {
    simulate({ strategy: 'round-robin', duration: v as Duration, backends: 2 })
    return undefined
  },
}

let open: Array<{ close?: () => Promise<void> } | undefined> = []
afterEach(async () => {
  vi.useRealTimers()
  for (const o of open) await o?.close?.()
  open = []
})

describe('durations', () => {
  it.each(Object.keys(factories))('"%s" takes a string with a unit or milliseconds', (name) => {
    open.push(factories[name]!('150ms'), factories[name]!(150))
  })

  it.each(
    Object.keys(factories).flatMap((name) => [
      [name, '30'],
      [name, 'soon'],
      [name, -1],
      [name, Number.NaN],
    ]),
  )('"%s" refuses %s with an InvalidArgumentError naming the option', (name, value) => {
    let error: unknown
    try {
      open.push(factories[name]!(value))
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as Error).message).toMatch(
      new RegExp(
        `^invalid option "${name.replace('.', '\\.')}": expected a (positive|non-negative) duration`,
      ),
    )
  })

  it('a health check interval given as a string checks on that period', async () => {
    vi.useFakeTimers()
    const balancer = createBalancer({ endpoints: ['a'] })
    let checks = 0
    const checker = createHealthChecker({
      balancer,
      interval: '2s',
      check: () => {
        checks++
        return true
      },
    })
    open.push(checker, balancer)
    await vi.advanceTimersByTimeAsync(1999)
    expect(checks).toBe(0)
    await vi.advanceTimersByTimeAsync(1)
    expect(checks).toBe(1)
  })

  it('an ejection time given as a string keeps the endpoint out that long', async () => {
    vi.useFakeTimers()
    const balancer = createBalancer({
      endpoints: ['a', 'b'],
      outlierDetection: { consecutiveFailures: 1, baseEjectionTime: '1m', maxEjectionShare: 1 },
    })
    open.push(balancer)
    const durations: number[] = []
    balancer.on('ejected', ({ durationMs }) => durations.push(durationMs))
    const a = balancer.get('a')!
    balancer.end(a, balancer.begin(a), false)
    expect(durations).toEqual([60_000])
    await vi.advanceTimersByTimeAsync(59_999)
    expect(a.ejected).toBe(true)
    await vi.advanceTimersByTimeAsync(1)
    expect(a.ejected).toBe(false)
  })

  it('slowStart.window 0 turns slow start off; other durations refuse 0', () => {
    const b = createBalancer({ endpoints: ['a'], slowStart: { window: 0 } })
    open.push(b)
    expect(b.add('b').effectiveWeight).toBe(1)
    expect(() => createBalancer({ endpoints: ['a'], ewmaDecay: 0 })).toThrow(
      /invalid option "ewmaDecay": expected a positive duration/,
    )
  })
})
