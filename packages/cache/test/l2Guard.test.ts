import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  createLruStore,
  InvalidArgumentError,
  L2UnavailableError,
  LRU_SLOT_BYTES,
} from '../src/index.js'
import { L2Guard } from '../src/internal/l2Guard.js'

const never = () => new Promise<string>(() => undefined)
const ok = () => Promise.resolve('v')
const fail = () => Promise.reject(new Error('boom'))

function guard(states: string[] = []) {
  return new L2Guard({
    name: 'test',
    timeout: 100,
    windowSize: 10,
    errorThresholdPercentage: 50,
    volumeThreshold: 4,
    telemetry: {},
    resetTimeout: 1000,
    onStateChange: (state) => states.push(state),
  })
}

describe('the L2 guard', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('fails a hung call once its timeout passes, with one timer for all pending calls', async () => {
    vi.useFakeTimers()
    const g = guard()
    const first = g.run('get', never, undefined, undefined)
    await vi.advanceTimersByTimeAsync(50)
    const second = g.run('get', never, undefined, undefined)
    first.catch(() => undefined)
    second.catch(() => undefined)
    expect(vi.getTimerCount()).toBe(1)
    await vi.advanceTimersByTimeAsync(50)
    await expect(first).rejects.toBeInstanceOf(L2UnavailableError)
    await expect(first).rejects.toThrow(/timed out after 100 ms/)
    let secondSettled = false
    second.then(
      () => undefined,
      () => {
        secondSettled = true
      },
    )
    await vi.advanceTimersByTimeAsync(10)
    expect(secondSettled).toBe(false)
    await vi.advanceTimersByTimeAsync(40)
    await expect(second).rejects.toBeInstanceOf(L2UnavailableError)
    await g.close()
  })

  it('passes values through and trips the breaker past the failure share, then refuses at once', async () => {
    const states: string[] = []
    const g = guard(states)
    await expect(g.run('get', ok, undefined, undefined)).resolves.toBe('v')
    await expect(g.run('get', ok, undefined, undefined)).resolves.toBe('v')
    for (let i = 0; i < 2; i++) {
      await expect(g.run('get', fail, undefined, undefined)).rejects.toThrow(/L2 get failed: boom/)
    }
    expect(g.state).toBe('closed') // 2 of 4: not above 50%
    await expect(g.run('get', fail, undefined, undefined)).rejects.toBeInstanceOf(
      L2UnavailableError,
    )
    expect(g.state).toBe('open')
    expect(states).toEqual(['open'])
    expect(g.available).toBe(false)
    let called = false
    const refused = g.run(
      'get',
      () => {
        called = true
        return ok()
      },
      undefined,
      undefined,
    )
    await expect(refused).rejects.toThrow(/circuit breaker is open/)
    expect(called).toBe(false)
    await g.close()
  })
})

describe('the LRU store byte bound', () => {
  it("covers lru-cache's preallocated slots", () => {
    const store = createLruStore({ maxEntries: 100, maxBytes: 10_000 })
    expect(store.bytes).toBe(100 * LRU_SLOT_BYTES)
    expect(() => createLruStore({ maxEntries: 1000, maxBytes: 1000 * LRU_SLOT_BYTES })).toThrow(
      InvalidArgumentError,
    )
    expect(() => createLruStore({ maxEntries: 1000, maxBytes: 1000 * LRU_SLOT_BYTES })).toThrow(
      /invalid option "l1.maxBytes"/,
    )
  })
})
