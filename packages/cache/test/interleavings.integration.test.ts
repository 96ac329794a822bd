import type { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { CacheGroup, connect, eventually } from './fixtures.js'

/**
 * Interleavings of invalidation with writes and replays, and foreign values at tag keys. Every test runs against the real Redis; where an interleaving
 * has to happen at one exact moment, the test wraps one method of a real client so that another
 * instance acts right then (the command itself still goes to the server).
 */

function names(group: CacheGroup) {
  const base = `${group.prefix}:${group.namespace}:`
  return {
    entry: (key: string, gen = 0) => `${base}${gen}:e:${key}`,
    tag: (tag: string, gen = 0) => `${base}${gen}:z:${tag}`,
  }
}

type AnyFn = (...args: unknown[]) => Promise<unknown>

/** Replaces `client[method]` with `wrapper(original)` for the rest of the test. */
function wrap(
  client: Redis,
  method: 'set' | 'publish' | 'evalsha',
  wrapper: (original: AnyFn) => AnyFn,
): void {
  const target = client as unknown as Record<string, AnyFn>
  const original = (target[method] as AnyFn).bind(client)
  target[method] = wrapper(original)
}

describe('TwoLevelCache replay of deferred invalidations', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('keeps a key deferred again while a replay is in flight, and replays it too', async () => {
    group = new CacheGroup('standalone')
    const client = (await connect('standalone')) as Redis
    group.clients.push(client)
    // one failure cannot trip the breaker; the replay is retried every 300 ms
    const a = await group.add({ breaker: { volumeThreshold: 100, resetTimeout: 300 } }, client)
    const b = await group.add()
    const raw = await group.raw()
    const { entry } = names(group)
    let failTombstone = false
    let interleave = false
    wrap(client, 'set', (original) => async (...args) => {
      if (failTombstone && String(args[1]).startsWith('t')) {
        failTombstone = false
        throw new Error('injected: the tombstone write failed')
      }
      return original(...args)
    })
    wrap(client, 'publish', (original) => async (...args) => {
      if (interleave && String(args[1]).includes('"t":"k"')) {
        // the replay has tombstoned "k" and is announcing it: another instance writes "k",
        // then this instance deletes it again, and that delete fails and is deferred
        interleave = false
        await b.set('k', 'written after the replay began')
        failTombstone = true
        await a.delete('k')
        expect(a.stats().pendingInvalidations).toBe(1)
      }
      return original(...args)
    })
    await a.set('k', 'v1')
    failTombstone = true
    interleave = true
    await a.delete('k') // fails once: deferred, replayed by the timer
    expect(a.stats().pendingInvalidations).toBe(1)
    await eventually(() => !interleave, 5000) // the replay ran, and the second delete failed meanwhile
    // the last operation on "k" is a delete: it must reach L2 and every instance in the end
    await eventually(async () => (await raw.get(entry('k')))?.startsWith('t') === true, 5000)
    await eventually(() => a.stats().pendingInvalidations === 0, 5000)
    await eventually(() => b.peek('k') === undefined)
    expect(await b.get('k')).toBeUndefined()
  })
})

describe('TwoLevelCache.deleteByTag with writers at work', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('leaves a member written again between its tombstone and its removal in the tag set', async () => {
    group = new CacheGroup('standalone')
    const client = (await connect('standalone')) as Redis
    group.clients.push(client)
    const a = await group.add({}, client)
    const b = await group.add()
    const raw = await group.raw()
    const { entry } = names(group)
    let interleave = false
    wrap(client, 'set', (original) => async (...args) => {
      const result = await original(...args)
      if (interleave && args[0] === entry('x') && String(args[1]).startsWith('t')) {
        interleave = false
        await b.set('x', 'written during the deleteByTag', { tags: ['T'] })
      }
      return result
    })
    await a.set('x', 'old', { tags: ['T'] })
    interleave = true
    await a.deleteByTag('T')
    expect(interleave).toBe(false)
    // the new value carries the tag: the next deleteByTag must find it
    await a.deleteByTag('T')
    expect((await raw.get(entry('x')))?.[0]).toBe('t')
    expect(await b.get('x')).toBeUndefined()
  })

  it('tombstones every member it started with however many short-lived members arrive meanwhile', async () => {
    group = new CacheGroup('standalone')
    const client = (await connect('standalone')) as Redis
    group.clients.push(client)
    // a generous L2 timeout: the injected writes run inside a's prune call, and on a loaded
    // machine 2,000 of them can outlast the default and time the delete out
    const a = await group.add({ l2Timeout: 20_000 }, client)
    const writer = await group.add({ l1: false, l2Timeout: 20_000 })
    const raw = await group.raw()
    const { entry, tag } = names(group)
    let interleave = false
    const inject = async () => {
      // after the tag was measured: 2,000 writes that expire sooner than the member below
      for (let from = 0; from < 2000; from += 500)
        await writer.setMany(
          Array.from({ length: 500 }, (_, j) => ({
            key: `short:${from + j}`,
            value: from + j,
            ttl: 60_000,
            tags: ['T'],
          })),
        )
    }
    wrap(client, 'evalsha', (original) => async (...args) => {
      const prune = interleave && args[2] === tag('T') && args.length === 4
      if (prune) interleave = false
      try {
        return await original(...args)
      } finally {
        if (prune) await inject()
      }
    })
    await a.set('long-lived', 'old', { ttl: 3_600_000, tags: ['T'] })
    interleave = true
    await a.deleteByTag('T')
    expect(interleave).toBe(false)
    expect((await raw.get(entry('long-lived')))?.[0]).toBe('t')
    expect(await writer.get('long-lived')).toBeUndefined()
  }, 30_000)
})

describe('TwoLevelCache with a foreign value at a tag key', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('deleteByTag and tagged writes still work, and L2 is read again', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add({ breaker: { resetTimeout: 100 } })
    const b = await group.add()
    const raw = await group.raw()
    const { tag } = names(group)
    const legacyTag = (t: string) => tag(t).replace(/:z:([^:]*)$/, ':t:$1')
    await raw.set(tag('T'), 'not a sorted set')
    await raw.rpush(legacyTag('T'), 'not a set')
    await a.set('x', 'tagged', { tags: ['T'] })
    await a.deleteByTag('T')
    await eventually(() => a.stats().pendingInvalidations === 0, 3000)
    await b.set('w', 'from b')
    expect(await a.get('w')).toBe('from b') // read from L2: nothing waits for a replay
    await a.set('x', 'tagged again', { tags: ['T'] })
    expect(await raw.type(tag('T'))).toBe('zset')
    expect(a.stats().pendingInvalidations).toBe(0)
  })
})

describe('TwoLevelCache fill racing a deleteByTag', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('replays the tombstone of a fill that predates the delete when writing it fails', async () => {
    group = new CacheGroup('standalone')
    const client = (await connect('standalone')) as Redis
    group.clients.push(client)
    const a = await group.add({ breaker: { volumeThreshold: 100, resetTimeout: 200 } }, client)
    const raw = await group.raw()
    const { entry } = names(group)
    let failTombstone = false
    wrap(client, 'set', (original) => async (...args) => {
      if (failTombstone && args[0] === entry('k') && String(args[1]).startsWith('t')) {
        failTombstone = false
        throw new Error('injected: the tombstone write failed')
      }
      return original(...args)
    })
    const value = await a.getOrSet(
      'k',
      async () => {
        // the tag is deleted while this load runs: its value predates the delete
        await a.deleteByTag('T')
        failTombstone = true
        return 'loaded before the delete'
      },
      { tags: ['T'] },
    )
    expect(value).toBe('loaded before the delete')
    expect(failTombstone).toBe(false) // the fill's tombstone was tried, and failed
    await eventually(async () => (await raw.get(entry('k')))?.startsWith('t') === true, 3000)
  })
})
