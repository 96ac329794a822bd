import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import fc from 'fast-check'
import { Cluster, Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { jsonSerializer } from '../src/index.js'
import { CacheGroup, connect, eventually, sleep } from './fixtures.js'

/** What an attacker with Redis access can do: publish on the channel and write under the prefix. */
function names(group: CacheGroup) {
  const base = `${group.prefix}:${group.namespace}:`
  return {
    channel: `${base}bus`,
    gen: `${base}gen`,
    entry: (key: string, gen = 0) => `${base}${gen}:e:${key}`,
    tag: (tag: string, gen = 0) => `${base}${gen}:z:${tag}`,
    legacyTag: (tag: string, gen = 0) => `${base}${gen}:t:${tag}`,
  }
}

describe('TwoLevelCache against hostile bus messages', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it.each(['standalone', 'cluster'] as const)(
    'rejects malformed messages without throwing, counts them and keeps working (%s)',
    async (topology) => {
      group = new CacheGroup(topology)
      const a = await group.add()
      const b = await group.add()
      const rejected: string[] = []
      b.on('bus-message-rejected', ({ reason }) => rejected.push(reason))
      const raw = await group.raw()
      const { channel } = names(group)
      const hostile = [
        '{"o":"x","s":1,"t":"k","k":null}',
        '{"o":"x","s":2,"t":"g","g":null}',
        '{"o":"x","s":3,"t":"f","k":5}',
        '{"o":"x","s":4,"t":"k","k":[1,2]}',
        '{"o":"x","s":5,"t":"k","k":["a"],"v":"nope"}',
        '{"o":"x","s":6,"t":"z"}',
        'null',
        '[]',
        'not json',
      ]
      for (const message of hostile) {
        if (raw instanceof Cluster) await raw.spublish(channel, message)
        else await raw.publish(channel, message)
      }
      await eventually(() => b.stats().bus.rejected === hostile.length)
      expect(rejected).toHaveLength(hostile.length)
      await a.set('k', 'v')
      await eventually(() => b.peek('k') === undefined)
      expect(await b.get('k')).toBe('v')
      expect(b.stats().bus.healthy).toBe(true)
    },
  )

  it('a forged clear cannot move the generation off the generation key', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add()
    const b = await group.add()
    const raw = await group.raw()
    const { channel } = names(group)
    await b.set('marker', 1)
    await raw.publish(channel, '{"o":"x","s":1,"t":"c","n":1e999}')
    await raw.publish(channel, '{"o":"x","s":2,"t":"c","n":1000000}')
    // Messages of one channel arrive in order: once the marker's invalidation is handled, so
    // are the two forged clears (the counters would not do: a's heartbeats count there too).
    await raw.publish(channel, '{"o":"x","s":3,"t":"k","k":["marker"]}')
    await eventually(() => b.peek('marker') === undefined)
    await sleep(20) // the generation key's re-read
    expect(b.stats().generation).toBe(0)
    await a.set('k', 'v1')
    expect(await b.get('k')).toBe('v1') // the same generation as a
    await b.clear()
    expect(b.stats().generation).toBe(1)
    await eventually(() => a.stats().generation === 1)
    await b.set('k', 'v2')
    expect(await a.get('k')).toBe('v2')
  })
  it('drops from L1 exactly the entries of a forged tag message with 100,000 tags, and keeps working', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add()
    const b = await group.add()
    for (let i = 0; i < 500; i++) await b.set(`k${i}`, i, { tags: [`t${i}`] })
    const raw = await group.raw()
    const { channel } = names(group)
    // Every even entry's tag among 100,000 decoys: the sweep costs L1 x each entry's own tags.
    const tags = Array.from({ length: 100_000 }, (_, i) => `decoy${i}`)
    for (let i = 0; i < 500; i += 2) tags.push(`t${i}`)
    await raw.publish(channel, JSON.stringify({ o: 'x', s: 1, t: 'g', g: tags }))
    // One message is handled in one synchronous sweep: once k0 is gone, the sweep is done (the
    // received counter would not do: a's heartbeats count there too).
    await eventually(() => b.peek('k0') === undefined)
    for (let i = 0; i < 500; i++) expect(b.peek(`k${i}`)).toBe(i % 2 === 0 ? undefined : i)
    await a.set('after', 'v')
    await eventually(() => b.peek('after') === undefined)
    expect(await b.get('after')).toBe('v')
  })
})

describe('TwoLevelCache fuzzed through real Redis', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('any bytes published on the invalidation channel are handled or rejected, never thrown', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add()
    const b = await group.add()
    const raw = await group.raw()
    const { channel } = names(group)
    let events = 0
    b.on('bus-message-rejected', () => events++)
    const field = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.constantFrom(null, 5, -1, 1.5, 'x', [1], ['a'], Number.MAX_SAFE_INTEGER + 2),
    )
    const text = fc.oneof(
      fc
        .record(
          {
            o: fc.oneof(fc.constant('x'), field),
            s: fc.oneof(fc.nat(), field),
            t: fc.oneof(fc.constantFrom('k', 'g', 'c', 'h', 'f'), field),
            k: field,
            v: field,
            g: field,
            n: field,
          },
          { requiredKeys: [] },
        )
        .map((m) => Buffer.from(JSON.stringify(m))),
      fc
        .constantFrom('{"o":"x","s":9,"t":"c","n":1e999}', '{"o":"y","s":1,"t":"k","k":null}')
        .map((m) => Buffer.from(m)),
      fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
    )
    await fc.assert(
      fc.asyncProperty(text, async (message) => {
        const before = b.stats().bus
        await raw.publish(channel, message)
        await eventually(() => {
          const after = b.stats().bus
          return after.received + after.rejected === before.received + before.rejected + 1
        })
        expect(Number.isSafeInteger(b.stats().generation)).toBe(true)
        expect(events).toBe(b.stats().bus.rejected)
      }),
      { seed: 14, numRuns: 60 },
    )
    expect(b.stats().bus.rejected).toBeGreaterThan(0)
    await a.set('after', 'fuzz')
    await eventually(async () => (await b.get('after')) === 'fuzz')
    expect(b.stats().generation).toBe(0)
  })

  it('any bytes stored at a key never make get, getMany or getOrSet reject; a decode failure is a miss and an event', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add({ l1: false })
    const raw = await group.raw()
    const { entry } = names(group)
    const undecodable = new Set<string>()
    a.on('decode-failed', ({ key }) => undecodable.add(key))
    const t = Date.now()
    const time = fc.oneof(fc.constant(String(t + 60_000)), fc.nat().map(String), fc.string())
    const stored = fc.oneof(
      fc.string(),
      fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
      fc
        .tuple(
          fc.constantFrom('v', 'n', 't', 'x'),
          fc.oneof(fc.string(), fc.constantFrom('i.1~devalue', 'i.1~json', 'i.1')),
          time,
          time,
          fc.oneof(fc.constant('0'), fc.string()),
          fc.oneof(fc.nat({ max: 12 }).map(String), fc.string()),
          fc.oneof(fc.string(), fc.constantFrom('["a"]', '[1]', '{}', '1', '"x"')),
        )
        .map(
          ([kind, token, fresh, stale, refresh, length, rest]) =>
            `${kind}${token}|${fresh}|${stale}|${refresh}|${length}|${rest}`,
        ),
    )
    let n = 0
    await fc.assert(
      fc.asyncProperty(stored, async (value) => {
        const key = `fuzz:${n++}`
        await raw.set(entry(key), value, 'PX', 60_000)
        await a.get(key)
        await a.getMany([key, 'absent'])
        const loaded = await a.getOrSet(key, () => 'loaded')
        if (undecodable.has(key)) expect(loaded).toBe('loaded')
      }),
      { seed: 14, numRuns: 80 },
    )
    expect(undecodable.size).toBeGreaterThan(0)
    expect(a.stats().l2.decodeFailed).toBeGreaterThanOrEqual(undecodable.size)
  })
})

describe('TwoLevelCache after one timed-out invalidation', () => {
  let group: CacheGroup
  let proxy: FaultProxy
  afterEach(async () => {
    await group.close()
    await proxy.close()
  })

  it('replays it without a breaker trip or a bus outage and reads L2 again', async () => {
    group = new CacheGroup('standalone')
    const url = new URL(await redisUrl())
    proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
    const viaProxy = new Redis(proxy.url(url.toString()), {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
    })
    viaProxy.on('error', () => undefined)
    group.clients.push(viaProxy)
    // no heartbeat falls in the slow window, and one failure cannot trip the breaker
    const options = {
      l2Timeout: 100,
      heartbeatInterval: 20_000,
      heartbeatTimeout: 60_000,
      breaker: { volumeThreshold: 100, resetTimeout: 200 },
    }
    const a = await group.add(options, viaProxy)
    const b = await group.add()
    const breaker: string[] = []
    a.on('breaker-changed', ({ state }) => breaker.push(state))
    await a.set('k', 'v1')
    proxy.setLatency(300)
    await a.set('k', 'v2') // times out once: its invalidation is kept for replay
    proxy.setLatency(0)
    expect(a.stats().pendingInvalidations).toBe(1)
    await sleep(400) // the slow reply has arrived; nothing else happens on its own
    await eventually(() => a.stats().pendingInvalidations === 0, 5000)
    await b.set('k', 'v3')
    await eventually(() => a.peek('k') === undefined)
    expect(await a.getOrSet('k', () => 'from the loader')).toBe('v3')
    expect(breaker).toEqual([])
    expect(a.stats().bus.healthy).toBe(true)
  })
})

describe('TwoLevelCache.ready when the generation cannot be read at first', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('keeps trying until its deadline instead of rejecting on the first failure', async () => {
    group = new CacheGroup('standalone')
    const raw = await group.raw()
    const { gen } = names(group)
    await raw.set(gen, 'not a number') // a foreign write: which generation is current is unknown
    const redis = await connect('standalone')
    group.clients.push(redis)
    const { createCache } = await import('../src/index.js')
    const cache = createCache({ redis, namespace: group.namespace, prefix: group.prefix })
    group.caches.push(cache)
    const errors: string[] = []
    cache.on('l2-failed', ({ error }) => errors.push(error.message))
    setTimeout(() => void raw.set(gen, '3'), 300)
    await cache.ready(10_000)
    expect(cache.stats().generation).toBe(3)
    expect(errors.some((message) => message.includes('not a safe integer'))).toBe(true)
  })
})

describe('TwoLevelCache tag sets', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('prunes members whose entries expired', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add({ jitter: 0 })
    const raw = await group.raw()
    await a.set('long', 'x', { ttl: 60_000, tags: ['t'] }) // keeps the tag's key alive
    for (let i = 0; i < 20; i++) await a.set(`short:${i}`, i, { ttl: 30, tags: ['t'] })
    await sleep(80)
    await a.set('later', 'y', { ttl: 60_000, grace: 0.5, tags: ['t'] }) // a fractional expiry too
    const { tag, legacyTag } = names(group)
    const count = async (key: string) => {
      const type = await raw.type(key)
      return type === 'zset' ? raw.zcard(key) : type === 'set' ? raw.scard(key) : 0
    }
    expect((await count(tag('t'))) + (await count(legacyTag('t')))).toBe(2)
    const ttl = await raw.pttl(tag('t'))
    expect(ttl).toBeGreaterThan(50_000) // the set lives as long as its longest entry
    expect(a.stats().l2.failed).toBe(0)
  })

  it.each(['standalone', 'cluster'] as const)(
    'deleteByTag also empties a tag set written by the previous version (rolling deploy, %s)',
    async (topology) => {
      group = new CacheGroup(topology)
      const a = await group.add()
      const raw = await group.raw()
      const { entry, tag, legacyTag } = names(group)
      await a.set('new', 'n', { tags: ['mixed'] })
      // what the previous version left: a plain set of keys, and their values
      for (let i = 0; i < 1200; i++)
        await raw.set(
          entry(`old:${i}`),
          `vi.${i}|${Date.now() + 60_000}|${Date.now() + 60_000}|0|0|"x"`,
          'PX',
          60_000,
        )
      await raw.sadd(legacyTag('mixed'), ...Array.from({ length: 1200 }, (_, i) => `old:${i}`))
      expect(await a.get('old:5')).toBeUndefined() // "x" is no devalue: a miss, not a rejection
      await a.deleteByTag('mixed')
      expect(await raw.exists(tag('mixed'))).toBe(0)
      expect(await raw.exists(legacyTag('mixed'))).toBe(0)
      for (const key of ['new', 'old:0', 'old:777', 'old:1199'])
        expect((await raw.get(entry(key)))?.[0]).toBe('t')
      expect(await a.get('new')).toBeUndefined()
    },
  )

  it('deleteByTag of 50,000 members works in bounded chunks under the L2 timeout', async () => {
    group = new CacheGroup('standalone')
    const writer = await group.add({ l2Timeout: 20_000, l1: false })
    // 4x the default l2Timeout, for a loaded CI machine: still far below what one call over all
    // 50,000 members takes (read the set, write 50,000 tombstones)
    const a = await group.add({ l2Timeout: 1000 })
    const b = await group.add()
    const errors: string[] = []
    a.on('l2-failed', ({ operation, error }) => errors.push(`${operation}: ${error.message}`))
    const n = 50_000
    for (let from = 0; from < n; from += 5000) {
      await writer.setMany(
        Array.from({ length: 5000 }, (_, j) => ({
          key: `big:${from + j}`,
          value: from + j,
          tags: ['big'],
        })),
      )
    }
    await eventually(async () => (await b.get('big:7')) === 7 && b.peek('big:7') === 7, 10_000)
    await a.deleteByTag('big')
    expect(errors).toEqual([])
    expect(a.stats().pendingInvalidations).toBe(0)
    await eventually(() => b.peek('big:7') === undefined)
    const raw = await group.raw()
    const { entry, tag, legacyTag } = names(group)
    expect(await raw.exists(tag('big'), legacyTag('big'))).toBe(0)
    for (let from = 0; from < n; from += 5000) {
      const values = await raw.mget(
        Array.from({ length: 5000 }, (_, j) => entry(`big:${from + j}`)),
      )
      expect(values.every((v) => v?.startsWith('t'))).toBe(true)
    }
  }, 120_000)
})

describe('TwoLevelCache with values it cannot decode', () => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('treats a foreign or undecodable L2 value as a miss with an event, and the loader replaces it', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add()
    const undecodable: string[] = []
    a.on('decode-failed', ({ key }) => undecodable.push(key))
    const raw = await group.raw()
    const { entry } = names(group)
    const now = Date.now()
    await raw.set(entry('foreign'), 'hello')
    await raw.set(entry('badtags'), `vx.1|${now + 60_000}|${now + 60_000}|0|3|[1,"a"]`)
    await raw.set(entry('badpayload'), `vx.1|${now + 60_000}|${now + 60_000}|0|0|[[`)
    for (const key of ['foreign', 'badtags', 'badpayload']) {
      expect(await a.get(key)).toBeUndefined()
      expect(await a.getMany([key])).toEqual([undefined])
      expect(await a.getOrSet(key, () => `loaded ${key}`)).toBe(`loaded ${key}`)
    }
    expect(new Set(undecodable)).toEqual(new Set(['foreign', 'badtags', 'badpayload']))
    // the loader's value replaced the bad one in L2
    const fresh = await group.add()
    expect(await fresh.get('badpayload')).toBe('loaded badpayload')
  })

  it('does not hand a value written with another serializer to this one (rolling deploy)', async () => {
    group = new CacheGroup('standalone')
    const a = await group.add() // devalue
    const b = await group.add({ serializer: jsonSerializer })
    const events: string[] = []
    b.on('decode-failed', ({ key }) => events.push(key))
    await a.set('d', new Date(0))
    expect(await b.get('d')).toBeUndefined()
    expect(events).toEqual(['d'])
    expect(await b.getOrSet('d', () => 'json value')).toBe('json value')
  })

  it('refuses a namespace that contains a colon', async () => {
    group = new CacheGroup('standalone')
    const redis = await connect('standalone')
    group.clients.push(redis)
    const { createCache } = await import('../src/index.js')
    expect(() => createCache({ redis, namespace: 'a:0:e' })).toThrow('invalid option "namespace"')
  })
})
