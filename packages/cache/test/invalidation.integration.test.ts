import { afterEach, describe, expect, it } from 'vitest'
import { CacheGroup, deferred, eventually, sleep, type Topology } from './fixtures.js'

const topologies: Topology[] = ['standalone', 'cluster']

describe.each(topologies)('TwoLevelCache on Redis %s', (topology) => {
  let group: CacheGroup
  afterEach(async () => {
    await group.close()
  })

  it('an update on one instance is never served stale by another once the invalidation is delivered', async () => {
    group = new CacheGroup(topology)
    const [a, b, c] = [await group.add(), await group.add(), await group.add()]
    await a.set('price', 100)
    expect(await b.get('price')).toBe(100)
    expect(await c.get('price')).toBe(100)
    expect(b.peek('price')).toBe(100) // held in b's L1
    for (let v = 101; v <= 120; v++) {
      await a.set('price', v)
      await eventually(() => b.peek('price') === undefined && c.peek('price') === undefined)
      expect(await b.get('price')).toBe(v)
      expect(await c.get('price')).toBe(v)
    }
  })

  it('delete, deleteByTag and clear reach every instance, in L2 and in L1', async () => {
    group = new CacheGroup(topology)
    const [a, b] = [await group.add({ grace: 60_000 }), await group.add({ grace: 60_000 })]
    await a.setMany([
      { key: 'p:1', value: 'one', tags: ['products'] },
      { key: 'p:2', value: 'two', tags: ['products', 'sale'] },
      { key: 'u:1', value: 'user' },
    ])
    expect(await b.getMany(['p:1', 'p:2', 'u:1'])).toEqual(['one', 'two', 'user'])
    await a.deleteByTag('products')
    await eventually(() => b.peek('p:1') === undefined && b.peek('p:2') === undefined)
    expect(await b.getMany(['p:1', 'p:2', 'u:1'])).toEqual([undefined, undefined, 'user'])
    // grace does not resurrect a deleted value (bentocache #71)
    await expect(b.getOrSet('p:1', () => Promise.reject(new Error('db down')))).rejects.toThrow(
      'db down',
    )
    await b.delete('u:1')
    await eventually(() => a.peek('u:1') === undefined)
    expect(await a.get('u:1')).toBeUndefined()
    await a.set('z', 1)
    expect(await b.get('z')).toBe(1)
    await b.clear()
    await eventually(() => a.peek('z') === undefined)
    expect(await a.get('z')).toBeUndefined()
    await a.set('z', 2)
    expect(await b.get('z')).toBe(2)
  })

  it('an L1 copy of an L2 entry takes the remaining TTL of the L2 entry', async () => {
    group = new CacheGroup(topology)
    const [a, b] = [await group.add({ jitter: 0 }), await group.add({ jitter: 0 })]
    await a.set('k', 'v', { ttl: 300 })
    await sleep(200)
    expect(await b.get('k')).toBe('v') // filled into b's L1 with ~100 ms left, not 300
    await sleep(150)
    expect(b.peek('k')).toBeUndefined()
    expect(await b.get('k')).toBeUndefined()
  })

  it('a fill that raced with a delete cannot write back the old value (versioned writes)', async () => {
    group = new CacheGroup(topology)
    const [a, b] = [await group.add(), await group.add()]
    const gate = deferred<string>()
    const loading = a.getOrSet('k', () => gate.promise)
    await sleep(20) // a has read L2 (miss) and is loading 'old' from the database
    await b.set('k', 'new') // the database changed; b writes the new value
    gate.resolve('old')
    expect(await loading).toBe('old') // a's caller raced the write: it gets what it loaded...
    expect(a.stats().conflicts).toBe(1)
    await sleep(20)
    expect(await a.get('k')).toBe('new') // ...but the old value was cached nowhere
    expect(await b.get('k')).toBe('new')
    const gate2 = deferred<string>()
    const loading2 = a.getOrSet('gone', () => gate2.promise)
    await sleep(20)
    await b.delete('gone')
    gate2.resolve('stale')
    await loading2
    await sleep(20)
    expect(await b.get('gone')).toBeUndefined()
    expect(await a.get('gone')).toBeUndefined()
  })

  it('getMany reads 100 keys from L2 in one round trip (one MGET per slot on a Cluster)', async () => {
    group = new CacheGroup(topology)
    const a = await group.add()
    const b = await group.add({ l1: false })
    const keys = Array.from({ length: 100 }, (_, i) => `{k}:${i}`)
    await a.setMany(keys.map((key, i) => ({ key, value: i })))
    const client = group.clients[1] as unknown as {
      sendCommand(command: { name: string }): unknown
    }
    const sent: string[] = []
    const original = client.sendCommand.bind(client)
    client.sendCommand = (command) => {
      sent.push(command.name)
      return original(command)
    }
    const values = await b.getMany(keys)
    client.sendCommand = original
    expect(values).toEqual(keys.map((_, i) => i))
    expect(sent.filter((name) => name !== 'publish' && name !== 'spublish')).toEqual(['mget'])
  })

  it('getOrSetMany calls the batch loader once for the keys missing in both levels', async () => {
    group = new CacheGroup(topology)
    const [a, b] = [await group.add(), await group.add()]
    await a.set('x:1', 'one')
    const calls: string[][] = []
    const values = await b.getOrSetMany(['x:1', 'x:2', 'x:3'], async (keys) => {
      calls.push([...keys])
      return keys.map((k) => `loaded ${k}`)
    })
    expect(values).toEqual(['one', 'loaded x:2', 'loaded x:3'])
    expect(calls).toEqual([['x:2', 'x:3']])
    expect(await a.get('x:3')).toBe('loaded x:3')
  })

  it('an instance that misses a message (sequence gap) flushes its L1 before serving again', async () => {
    group = new CacheGroup(topology)
    const [a, b] = [await group.add(), await group.add()]
    await a.set('k', 1)
    expect(await b.get('k')).toBe(1)
    const raw = await group.raw()
    const channel = `${group.prefix}:${group.namespace}:bus`
    const publish = (s: number) =>
      topology === 'cluster'
        ? raw.spublish(channel, JSON.stringify({ o: 'ghost', s, t: 'h' }))
        : raw.publish(channel, JSON.stringify({ o: 'ghost', s, t: 'h' }))
    await publish(1)
    await sleep(20)
    expect(b.peek('k')).toBe(1)
    await publish(3) // message 2 was lost
    await eventually(() => b.peek('k') === undefined)
    expect(b.stats().bus.gaps).toBe(1)
  })

  it('with the lock, one instance loads a cold key and the others are woken by its message', async () => {
    group = new CacheGroup(topology)
    // an hour-long lease and wait: a waiter that is not woken by the holder's message never returns
    const lock = { lease: '1h', wait: '1h' } as const
    const caches = [
      await group.add({ lock }),
      await group.add({ lock }),
      await group.add({ lock }),
      await group.add({ lock }),
    ]
    let calls = 0
    const loader = async () => {
      calls++
      await sleep(100)
      return 'v'
    }
    const values = await Promise.all(
      caches.flatMap((cache) =>
        Array.from({ length: 50 }, () => cache.getOrSet('cold', loader, { lock: true })),
      ),
    )
    expect(values.every((v) => v === 'v')).toBe(true)
    expect(calls).toBe(1) // the others were woken by its message and read its value
  })

  it('the Bloom filter answers "absent" for keys that never existed without calling the loader', async () => {
    group = new CacheGroup(topology)
    const [a, b] = [
      await group.add({ bloom: { expectedItems: 1000 } }),
      await group.add({ bloom: { expectedItems: 1000 } }),
    ]
    await a.addToFilter(['user:1', 'user:2'])
    let calls = 0
    const loader = async (ctx: { key: string }) => {
      calls++
      return `loaded ${ctx.key}`
    }
    expect(await b.getOrSet('user:1', loader)).toBe('loaded user:1')
    expect(await b.getOrSet('user:999', loader)).toBeUndefined()
    expect(calls).toBe(1)
    await a.set('user:3', 'three')
    await b.delete('user:3')
    expect(await b.getOrSet('user:3', loader)).toBe('loaded user:3')
  })
})
