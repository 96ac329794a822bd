import { describe, expect, it } from 'vitest'
import {
  createBalancedClient,
  createBalancer,
  createHealthChecker,
  createProxy,
  createRetryBudget,
  HashRing,
  InvalidArgumentError,
  simulate,
} from '../src/index.js'

/** The error a call throws (synchronously or as a rejection). */
async function failure(call: () => unknown): Promise<Error> {
  try {
    await call()
  } catch (error) {
    return error as Error
  }
  throw new Error('expected a failure')
}

describe('validation', () => {
  it.each([
    [
      () => createBalancer({ endpoints: ['a'], strategy: 'fastest' as never }),
      'invalid option "strategy": expected one of "round-robin", "weighted-round-robin", "random", "least-request", "peak-ewma", "consistent-hash", "bounded-load", got "fastest"',
    ],
    [
      () => createBalancer({ endpoints: ['a'], balanceFactor: 1 }),
      'invalid option "balanceFactor": expected a number above 1, got 1',
    ],
    [
      () => createBalancer({ endpoints: ['a'], slowStart: { minWeightShare: 0 } }),
      'invalid option "slowStart.minWeightShare": expected a number above 0 and at most 1, got 0',
    ],
    [
      () => createBalancer({ endpoints: ['a'], clock: 'now' as never }),
      'invalid option "clock": expected a function, got "now"',
    ],
    [
      () => createHealthChecker({ balancer: createBalancer({ endpoints: ['a'] }), rise: 1.5 }),
      'invalid option "rise": expected an integer >= 1, got 1.5',
    ],
    [
      () => createRetryBudget({ ratio: -1 }),
      'invalid option "ratio": expected a number >= 0, got -1',
    ],
    [
      () => createBalancedClient({ endpoints: ['ftp://x'] }),
      'invalid option "endpoints": expected origins such as "http://127.0.0.1:8080", got "ftp://x"',
    ],
    [
      () => createProxy({ routes: [{ upstream: ['http://a:1'] }], connections: 1.5 }),
      'invalid option "connections": expected an integer >= 1, got 1.5',
    ],
    [
      () => createProxy({ routes: [] }),
      'invalid option "routes": expected a list of at least one route, got []',
    ],
    [
      () => new HashRing([], { pointsPerWeight: 0 }),
      'invalid option "pointsPerWeight": expected an integer >= 1, got 0',
    ],
    [
      () => simulate({ strategy: 'random', utilisation: 1 }),
      'invalid option "utilisation": expected a number above 0 and below 1, got 1',
    ],
  ])('refuses a bad option at construction with one message shape (%#)', async (call, message) => {
    const error = await failure(call)
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect(error.message).toBe(message)
  })

  it('says "argument" for what a call is given', async () => {
    const balancer = createBalancer({ endpoints: ['a'] })
    expect((await failure(() => balancer.add(''))).message).toBe(
      'invalid argument "endpoint": expected a non-empty id, got ""',
    )
    expect((await failure(() => new HashRing(['a']).add(7 as never))).message).toBe(
      'invalid argument "id": expected a string, got 7',
    )
    const client = createBalancedClient({ endpoints: ['http://127.0.0.1:1'] })
    const error = await failure(() => client.request({ path: 'orders' }))
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect(error.message).toBe(
      'invalid argument "path": expected a string starting with "/", got "orders"',
    )
    await client.close()
    await balancer.close()
  })
})
