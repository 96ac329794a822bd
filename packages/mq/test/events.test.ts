import { captureListenerErrors } from '@ballast/testkit/vitest'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createBroker, createOutbox, createOutboxRelay, type SqlPool } from '../src/index.js'
import { until } from './support/bounded.js'

// nothing listens on port 1: each connect is refused at once and a reconnect is scheduled
const URL = 'amqp://127.0.0.1:1'
const downPool: SqlPool = { getConnection: () => Promise.reject(new Error('database down')) }

afterEach(() => {
  vi.restoreAllMocks()
})

function refusedBroker() {
  return createBroker({
    urls: URL,
    connectTimeout: 200,
    shutdownTimeout: 0,
    reconnect: { initialDelay: 5, maxDelay: 10, jitter: 0 },
  })
}

describe('Broker events', () => {
  it('a throwing listener breaks neither the reconnect loop nor the listeners after it; its error is rethrown in a microtask', async () => {
    const rethrown = captureListenerErrors()
    const broker = refusedBroker()
    const bug = new Error('listener bug')
    const seen: number[] = []
    broker.on('reconnect-scheduled', () => {
      throw bug
    })
    broker.on('reconnect-scheduled', ({ attempt }) => seen.push(attempt))
    await until(() => seen.length >= 3, 10_000, 'three reconnect attempts')
    await broker.close()
    expect(seen.slice(0, 3)).toEqual([1, 2, 3])
    expect(rethrown.length).toBeGreaterThanOrEqual(3)
    expect(rethrown.every((error) => error === bug)).toBe(true)
  })

  it('on() and once() return a function that unsubscribes', async () => {
    const broker = refusedBroker()
    const onCalls: number[] = []
    const onceCalls: number[] = []
    const off = broker.on('reconnect-scheduled', ({ attempt }) => onCalls.push(attempt))
    broker.once('reconnect-scheduled', ({ attempt }) => onceCalls.push(attempt))
    const never = vi.fn()
    broker.once('reconnect-scheduled', never)()
    await until(() => onCalls.length >= 1, 10_000, 'a reconnect attempt')
    off()
    const after = onCalls.length
    const more: number[] = []
    broker.on('reconnect-scheduled', ({ attempt }) => more.push(attempt))
    await until(() => more.length >= 2, 10_000, 'two more reconnect attempts')
    await broker.close()
    expect(onCalls).toHaveLength(after)
    expect(onceCalls).toEqual([1])
    expect(never).not.toHaveBeenCalled()
  })
})

describe('OutboxRelay events', () => {
  it('a throwing relay-failed listener does not stop the relay; its error is rethrown in a microtask', async () => {
    const rethrown = captureListenerErrors()
    const broker = refusedBroker()
    const relay = createOutboxRelay({
      pool: downPool,
      broker,
      outbox: createOutbox(),
      pollInterval: 1,
    })
    const bug = new Error('listener bug')
    const failures: Error[] = []
    relay.on('relay-failed', () => {
      throw bug
    })
    const off = relay.on('relay-failed', ({ error }) => failures.push(error))
    await until(() => failures.length >= 2, 10_000, 'two failed polls')
    off()
    await relay.close()
    await broker.close()
    expect(failures[0]?.message).toBe('database down')
    expect(rethrown).toContain(bug)
  })
})
