import { captureListenerErrors } from '@ballast/testkit/vitest'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { CacheGroup } from './fixtures.js'

let group: CacheGroup | undefined

afterEach(async () => {
  vi.restoreAllMocks()
  await group?.close()
  group = undefined
})

describe('TwoLevelCache events against Redis', () => {
  it('a throwing decode-failed listener does not make get() or getOrSet() reject: the read is still a miss', async () => {
    const rethrown = captureListenerErrors()
    group = new CacheGroup('standalone')
    const cache = await group.add({ l1: false })
    const raw = await group.raw()
    await raw.set(`${group.prefix}:${group.namespace}:0:e:k`, 'not an envelope', 'PX', 60_000)
    const bug = new Error('listener bug')
    cache.on('decode-failed', () => {
      throw bug
    })
    await expect(cache.get('k')).resolves.toBeUndefined()
    await expect(cache.getOrSet('k', () => 'loaded')).resolves.toBe('loaded')
    await vi.waitFor(() => expect(rethrown).toEqual([bug, bug]))
    expect(cache.stats().l2.decodeFailed).toBe(2)
  })
})
