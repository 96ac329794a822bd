import { captureListenerErrors } from '@ballast/testkit/vitest'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { type CacheEvents, createCache } from '../src/index.js'

afterEach(() => {
  vi.useRealTimers()
  vi.restoreAllMocks()
})

describe('TwoLevelCache events', () => {
  it('on() and once() return a function that removes the listener', async () => {
    const cache = createCache<number>()
    const seen: string[] = []
    const off = cache.on('stale-served', ({ key }) => seen.push(`on:${key}`))
    cache.once('stale-served', ({ key }) => seen.push(`once:${key}`))
    const removedBeforeItRan = cache.once('stale-served', () => seen.push('never'))
    removedBeforeItRan()
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] })
    await cache.set('a', 1, { ttl: 1000, grace: '1h' })
    await cache.set('b', 2, { ttl: 1000, grace: '1h' })
    vi.advanceTimersByTime(2000)
    expect(await cache.getOrSet('a', () => 10)).toBe(1)
    off()
    expect(await cache.getOrSet('b', () => 20)).toBe(2)
    expect(seen).toEqual(['on:a', 'once:a'])
    await cache.close()
  })

  it('a throwing listener does not make getOrSet reject: the stale fallback is still returned', async () => {
    const rethrown = captureListenerErrors()
    const cache = createCache<string>({ grace: '1h', ttl: 1000 })
    const bug = new Error('metrics listener bug')
    const events: (keyof CacheEvents)[] = []
    cache.on('stale-served', ({ reason }) => {
      events.push('stale-served')
      expect(reason).toBe('load-failed')
      throw bug
    })
    cache.on('load-failed', () => {
      events.push('load-failed')
      throw bug
    })
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout', 'clearTimeout'] })
    await cache.set('k', 'old')
    vi.advanceTimersByTime(2000)
    const value = await cache.getOrSet(
      'k',
      () => {
        throw new Error('database down')
      },
      { softTimeout: '1s' },
    )
    expect(value).toBe('old')
    await vi.waitFor(() => expect(events).toContain('load-failed'))
    expect(events).toContain('stale-served')
    await vi.waitFor(() => expect(rethrown.length).toBeGreaterThanOrEqual(2))
    expect(rethrown.every((error) => error === bug)).toBe(true)
    expect(cache.stats().loader.failed).toBe(1)
    await cache.close()
  })

  it('a throwing l1-flushed listener does not make clear() reject, and the cache keeps answering', async () => {
    const rethrown = captureListenerErrors()
    const cache = createCache<number>()
    cache.on('l1-flushed', () => {
      throw new Error('listener bug')
    })
    await cache.set('k', 1)
    await expect(cache.clear()).resolves.toBeUndefined()
    expect(await cache.get('k')).toBeUndefined()
    await vi.waitFor(() => expect(rethrown).toHaveLength(1))
    await cache.close()
  })
})
