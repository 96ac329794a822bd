import { rejection, thrown } from '@ballast/testkit'
import { describe, expect, it } from 'vitest'
import {
  ClosedError,
  createBalancedClient,
  createBalancer,
  createHealthChecker,
  createProxy,
  errors,
  isLbError,
  LbClosedError,
} from '../src/index.js'

// Nothing listens on port 1: a call that got past the closed check would fail differently.
const url = 'http://127.0.0.1:1'

function expectClosed(error: unknown, object: string, operation: string): void {
  expect(error).toBeInstanceOf(LbClosedError)
  expect(isLbError(error)).toBe(true)
  const closed = error as LbClosedError
  expect(closed.code).toBe('E_LB_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.object).toBe(object)
  expect(closed.operation).toBe(operation)
  expect(closed.message).toBe(`${object} is closed: ${operation}() after close()`)
}

describe('after close()', () => {
  it('a balancer refuses pick() and add() with a non-retryable LbClosedError', async () => {
    const balancer = createBalancer({ endpoints: ['a', 'b'] })
    await balancer.close()
    expectClosed(
      thrown(() => balancer.pick()),
      'balancer',
      'pick',
    )
    expectClosed(
      thrown(() => balancer.add('c')),
      'balancer',
      'add',
    )
    // bookkeeping and counters still answer: in-flight calls report their end after close()
    expect(balancer.stats().total).toBe(2)
  })

  it('a balanced client refuses request() with a non-retryable LbClosedError', async () => {
    const client = createBalancedClient({ endpoints: [url] })
    await client.close()
    expectClosed(await rejection(() => client.request({ path: '/' })), 'balanced client', 'request')
  })

  it('a health checker refuses checkNow() with a non-retryable LbClosedError', async () => {
    const balancer = createBalancer({ endpoints: [url] })
    const checker = createHealthChecker({ balancer, check: { type: 'tcp' }, interval: 60_000 })
    await checker.close()
    expectClosed(await rejection(() => checker.checkNow()), 'health checker', 'checkNow')
    await balancer.close()
  })

  it('a reverse proxy refuses listen() with a non-retryable LbClosedError', async () => {
    const proxy = createProxy({ routes: [{ upstream: [url] }] })
    await proxy.close()
    expectClosed(await rejection(() => proxy.listen(0)), 'reverse proxy', 'listen')
    expect(proxy.server.listening).toBe(false)
  })
})

describe('LbClosedError', () => {
  it('is in the errors map, ignores a retryable option, and the old ClosedError name still catches it', () => {
    expect(errors.LbClosedError).toBe(LbClosedError)
    const error = new LbClosedError('balancer', 'pick', { retryable: true })
    expect(error.retryable).toBe(false)
    expect(error).toBeInstanceOf(ClosedError)
  })
})
