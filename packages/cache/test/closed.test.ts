import { rejection } from '@ballast/testkit'
import { describe, expect, it } from 'vitest'
import { CacheClosedError, createCache, errors, isCacheError } from '../src/index.js'

function expectClosed(error: unknown, operation: string): void {
  expect(error).toBeInstanceOf(CacheClosedError)
  expect(isCacheError(error)).toBe(true)
  const closed = error as CacheClosedError
  expect(closed.code).toBe('E_CACHE_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.operation).toBe(operation)
  expect(closed.message).toBe(`cache is closed: ${operation}() after close()`)
}

describe('TwoLevelCache', () => {
  describe('after close()', () => {
    it('refuses every operation with a non-retryable CacheClosedError, even for a key L1 held', async () => {
      const cache = createCache()
      await cache.set('k', 1)
      expect(cache.peek('k')).toBe(1)
      await cache.close()
      let loads = 0
      const calls: [string, () => Promise<unknown>][] = [
        ['get', () => cache.get('k')],
        ['has', () => cache.has('k')],
        ['getMany', () => cache.getMany(['k'])],
        ['getOrSet', () => cache.getOrSet('k', () => ++loads)],
        ['getOrSetMany', () => cache.getOrSetMany(['k'], (keys) => keys.map(() => ++loads))],
        ['set', () => cache.set('k', 2)],
        ['setMany', () => cache.setMany([{ key: 'k', value: 2 }])],
        ['delete', () => cache.delete('k')],
        ['deleteMany', () => cache.deleteMany(['k'])],
        ['deleteByTag', () => cache.deleteByTag('t')],
        ['clear', () => cache.clear()],
        ['addToFilter', () => cache.addToFilter('k')],
        ['ready', () => cache.ready(1000)],
      ]
      for (const [operation, call] of calls) expectClosed(await rejection(call), operation)
      let peeked: unknown
      try {
        cache.peek('k')
      } catch (error) {
        peeked = error
      }
      expectClosed(peeked, 'peek')
      expect(loads).toBe(0)
      // a second close() is a no-op, not an error
      await expect(cache.close()).resolves.toBeUndefined()
    })
  })
})

describe('CacheClosedError', () => {
  it('is in the errors map and is never retryable, whatever the options say', () => {
    expect(errors.CacheClosedError).toBe(CacheClosedError)
    expect(new CacheClosedError('cache', 'get', { retryable: true }).retryable).toBe(false)
  })
})
