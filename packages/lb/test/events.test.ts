import { captureListenerErrors } from '@ballast/testkit/vitest'
import { request } from 'undici'
import { afterEach, describe, expect, it, vi } from 'vitest'
import * as lb from '../src/index.js'
import { createBalancer, createHealthChecker, createProxy } from '../src/index.js'

let cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  vi.restoreAllMocks()
  for (const fn of cleanup.reverse()) await fn()
  cleanup = []
})

/** The errors these tests' listeners throw; anything else a microtask throws is a real failure. */
function isListenerBug(error: unknown): boolean {
  return (error as { fromListener?: boolean }).fromListener === true
}

function listenerBug(message: string): Error {
  return Object.assign(new Error(message), { fromListener: true })
}

describe('balancer events', () => {
  it('pass one event object: picked, endpoint-added and endpoint-removed carry { endpoint }', () => {
    const b = createBalancer({ endpoints: ['a'], strategy: 'round-robin' })
    cleanup.push(() => b.close())
    const seen: string[] = []
    b.on('picked', ({ endpoint }) => seen.push(`picked ${endpoint.id}`))
    b.on('endpoint-added', ({ endpoint }) => seen.push(`added ${endpoint.id}`))
    b.on('endpoint-removed', ({ endpoint }) => seen.push(`removed ${endpoint.id}`))
    b.pick()
    b.add('b')
    b.remove('b')
    expect(seen).toEqual(['picked a', 'added b', 'removed b'])
  })

  it('reports panic mode as panic-changed', () => {
    const b = createBalancer({ endpoints: ['a', 'b', 'c'], panicThreshold: 0.5 })
    cleanup.push(() => b.close())
    const events: lb.PanicChangedEvent[] = []
    b.on('panic-changed', (e) => events.push(e))
    b.setHealthy('a', false)
    b.setHealthy('b', false)
    expect(events).toEqual([{ active: true, healthy: 1, total: 3 }])
  })

  it('a listener that throws does not break pick() nor the listeners after it; its error is rethrown in a microtask', async () => {
    const rethrown = captureListenerErrors(isListenerBug)
    const b = createBalancer({ endpoints: ['a'] })
    cleanup.push(() => b.close())
    const boom = listenerBug('metrics listener bug')
    const after: string[] = []
    b.on('picked', () => {
      throw boom
    })
    b.on('picked', ({ endpoint }) => after.push(endpoint.id))
    expect(b.pick().id).toBe('a')
    expect(after).toEqual(['a'])
    await Promise.resolve()
    expect(rethrown).toEqual([boom])
  })

  it('on() and once() return a function that removes the listener', () => {
    const b = createBalancer({ endpoints: ['a'] })
    cleanup.push(() => b.close())
    let on = 0
    let once = 0
    const off = b.on('picked', () => on++)
    b.once('picked', () => once++)
    b.pick()
    b.pick()
    off()
    b.pick()
    expect([on, once]).toEqual([2, 1])
  })
})

describe('health checker events', () => {
  it('reports each check as checked, and once() hears only the first', async () => {
    const balancer = createBalancer({ endpoints: ['a'] })
    const checker = createHealthChecker({ balancer, interval: '1h', check: () => false })
    cleanup.push(
      () => checker.close(),
      () => balancer.close(),
    )
    const all: boolean[] = []
    const first: string[] = []
    checker.on('checked', ({ healthy }) => all.push(healthy))
    checker.once('checked', ({ endpoint }) => first.push(endpoint.id))
    await checker.checkNow()
    await checker.checkNow()
    expect(all).toEqual([false, false])
    expect(first).toEqual(['a'])
    expect(checker.stats()).toMatchObject({ checks: 2, succeeded: 0, failed: 2 })
  })
})

describe('proxy events', () => {
  it('once() hears one request-failed; a throwing listener does not change the 503 the client gets', async () => {
    const rethrown = captureListenerErrors(isListenerBug)
    // Nothing listens on port 1: every attempt is refused.
    const proxy = createProxy({ routes: [{ upstream: ['http://127.0.0.1:1'] }] })
    cleanup.push(() => proxy.close())
    const { port } = await proxy.listen()
    const once: number[] = []
    proxy.once('request-failed', ({ status }) => once.push(status))
    proxy.on('request-failed', () => {
      throw listenerBug('logger bug')
    })
    for (let i = 0; i < 2; i++) {
      const res = await request(`http://127.0.0.1:${port}/`)
      await res.body.text()
      expect(res.statusCode).toBe(503)
    }
    expect(once).toEqual([503])
    await new Promise((resolve) => setImmediate(resolve))
    expect(rethrown).toHaveLength(2)
    expect(proxy.stats()).toMatchObject({ requests: 2, unavailable: 2, timedOut: 0 })
  })
})

describe('public surface', () => {
  it('exports no TypedEmitter: the shared Emitter is not part of the API', () => {
    expect('TypedEmitter' in lb).toBe(false)
  })

  it('freezes every DEFAULT_*_OPTIONS', () => {
    const defaults = Object.entries(lb).filter(([name]) => /^DEFAULT_\w+_OPTIONS$/.test(name))
    expect(defaults.length).toBeGreaterThanOrEqual(10)
    for (const [name, value] of defaults) expect(Object.isFrozen(value), name).toBe(true)
  })
})
