import {
  createFaultProxy,
  type FaultProxy,
  type PrivateRedisCluster,
  redisClusterNodes,
  startPrivateRedisCluster,
} from '@ballast/testkit'
import calculateSlot from 'cluster-key-slot'
import { Cluster } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { type BreakerChangedEvent, createCache, DEFAULT_CACHE_OPTIONS } from '../src/index.js'
import { KeyNames } from '../src/internal/keys.js'
import { CacheGroup, eventually } from './fixtures.js'

const KEYS = 300
const ROUNDS = 5

describe('TwoLevelCache on a Redis Cluster: one L2 breaker per master node', () => {
  let group: CacheGroup | undefined
  let proxies: FaultProxy[] = []
  afterEach(async () => {
    await group?.close()
    group = undefined
    await Promise.all(proxies.map((p) => p.close()))
    proxies = []
  })

  it('a master cut off opens only its own breaker: keys of the other masters never go to the loader', async () => {
    group = new CacheGroup('cluster')
    // every node behind a fault proxy of its own (natMap): cutting one proxy is that master dying
    // for this client, while the shared cluster itself stays whole for the other tests
    const nodes = await redisClusterNodes()
    proxies = await Promise.all(nodes.map((node) => createFaultProxy(node)))
    const natMap = Object.fromEntries(
      nodes.map((node, i) => [
        `${node.host}:${node.port}`,
        { host: '127.0.0.1', port: (proxies[i] as FaultProxy).port },
      ]),
    )
    const client = new Cluster([{ host: '127.0.0.1', port: (proxies[0] as FaultProxy).port }], {
      natMap,
      enableOfflineQueue: false,
    })
    client.on('error', () => undefined)
    await new Promise((resolve) => client.once('ready', resolve))
    group.clients.push(client)
    const cache = await group.add(
      {
        l1: false,
        // generous: on 2 loaded cores a healthy node's reply can wait behind a stalled event
        // loop, and a timeout is a failure the loader answers (the victim's calls fail at once)
        l2Timeout: '1s',
        breaker: { windowSize: 10, volumeThreshold: 3, resetTimeout: 300 },
      },
      client,
    )
    const changes: BreakerChangedEvent[] = []
    cache.on('breaker-changed', (event) => changes.push(event))

    // which master serves each key, as the client's slots table says (the table the cache routes
    // by), read before the cut: after it, a MOVED reply may write the victim's unmapped address there
    const names = new KeyNames(group.prefix, group.namespace)
    const nodeOf = (key: string) => client.slots[calculateSlot(names.entry(key))]?.[0] as string
    const keys = Array.from({ length: KEYS }, (_, i) => `item:${i}`)
    const loads = new Map<string, number>()
    const loader = (key: string) => async () => {
      loads.set(key, (loads.get(key) ?? 0) + 1)
      return `value of ${key}`
    }
    const round = async () => {
      for (let from = 0; from < keys.length; from += 20) {
        const chunk = keys.slice(from, from + 20)
        const values = await Promise.all(chunk.map((key) => cache.getOrSet(key, loader(key))))
        expect(values).toEqual(chunk.map((key) => `value of ${key}`))
      }
    }
    await round() // fills L2: one load per key
    expect([...loads.values()].every((n) => n === 1)).toBe(true)
    expect(cache.stats().breaker).toBe('closed')

    // the victim: the master that serves the most of our keys
    const byNode = new Map<string, string[]>()
    for (const key of keys) byNode.set(nodeOf(key), [...(byNode.get(nodeOf(key)) ?? []), key])
    expect(byNode.size).toBeGreaterThanOrEqual(3)
    const [victim, victimKeys] = [...byNode].sort((a, b) => b[1].length - a[1].length)[0] as [
      string,
      string[],
    ]
    const proxy = proxies.find((p) => `127.0.0.1:${p.port}` === victim) as FaultProxy
    expect(proxy).toBeDefined()
    loads.clear()
    proxy.refuse()
    proxy.cut()

    for (let i = 0; i < ROUNDS; i++) await round()

    const healthyKeys = keys.filter((key) => !victimKeys.includes(key))
    const healthyLoads = healthyKeys.reduce((sum, key) => sum + (loads.get(key) ?? 0), 0)
    const victimLoads = victimKeys.reduce((sum, key) => sum + (loads.get(key) ?? 0), 0)
    expect({ healthyLoads, victimLoads: victimLoads >= victimKeys.length }).toEqual({
      healthyLoads: 0,
      victimLoads: true,
    })
    const breakers = cache.stats().breakers
    expect(breakers[victim]).not.toBe('closed')
    for (const node of byNode.keys()) if (node !== victim) expect(breakers[node]).toBe('closed')
    expect(changes.some((event) => event.node === victim && event.state === 'open')).toBe(true)
    expect(changes.filter((event) => event.node !== victim)).toEqual([])
    expect(cache.stats().breaker).not.toBe('closed') // the worst of them

    // back: the victim's breaker closes after a probe and its keys are read from L2 again
    proxy.restore()
    await eventually(async () => {
      await cache.getOrSet(victimKeys[0] as string, loader(victimKeys[0] as string))
      return cache.stats().breakers[victim] === 'closed'
    }, 15_000)
    loads.clear()
    await round()
    expect(loads.size).toBe(0)
    expect(cache.stats().breaker).toBe('closed')
  }, 30_000)

  // ~7 s (a private cluster of its own: start, SIGKILL of a real master, the ~3 s promotion)
  it('a master killed (SIGKILL) opens only its breaker until its replica is promoted; then the promoted node serves the slots from L2 and the dead one drops out', async () => {
    let cluster: PrivateRedisCluster | undefined
    let client: Cluster | undefined
    let cache: Awaited<ReturnType<CacheGroup['add']>> | undefined
    try {
      cluster = await startPrivateRedisCluster()
      client = new Cluster(cluster.seeds, { enableOfflineQueue: false })
      client.on('error', () => undefined)
      await new Promise((resolve) => (client as Cluster).once('ready', resolve))
      cache = createCache({
        redis: client,
        namespace: 'breaker',
        l1: false,
        l2Timeout: '1s',
        breaker: { windowSize: 10, volumeThreshold: 3, resetTimeout: 300 },
      })
      await cache.ready()
      const names = new KeyNames(DEFAULT_CACHE_OPTIONS.prefix, 'breaker')
      const keys = Array.from({ length: 150 }, (_, i) => `item:${i}`)
      const loads = new Map<string, number>()
      const c = cache
      const round = async () =>
        Promise.all(
          keys.map((key) =>
            c.getOrSet(key, async () => {
              loads.set(key, (loads.get(key) ?? 0) + 1)
              return key
            }),
          ),
        )
      await round()
      const masterOf = new Map<string, number>()
      for (const key of keys) masterOf.set(key, (await cluster.masterOf(names.entry(key))).port)
      const victim = (cluster.nodes[0] as { port: number }).port
      const victimKeys = keys.filter((key) => masterOf.get(key) === victim)
      expect(victimKeys.length).toBeGreaterThan(0)
      loads.clear()
      await cluster.kill(victim, 'SIGKILL')
      const killedAt = Date.now()
      // the promotion takes node-timeout (2 s) and an election: rounds before it see the dead master
      while (Date.now() - killedAt < 1500) await round()
      const healthyLoads = keys
        .filter((key) => masterOf.get(key) !== victim)
        .reduce((sum, key) => sum + (loads.get(key) ?? 0), 0)
      expect(healthyLoads).toBe(0)
      expect(victimKeys.every((key) => (loads.get(key) ?? 0) > 0)).toBe(true)
      expect(cache.stats().breakers[`127.0.0.1:${victim}`]).not.toBe('closed')

      await cluster.waitHealthy(20_000)
      // once the client has the new slots table, the promoted replica serves them from L2
      await eventually(async () => {
        loads.clear()
        await round()
        return loads.size === 0
      }, 20_000)
      expect(Object.keys(cache.stats().breakers)).not.toContain(`127.0.0.1:${victim}`)
      expect(cache.stats().breaker).toBe('closed')
    } finally {
      await cache?.close()
      client?.disconnect()
      await cluster?.close()
    }
  }, 60_000)

  it('a standalone Redis keeps one breaker, reported under its address', async () => {
    group = new CacheGroup('standalone')
    const cache = await group.add({})
    await cache.getOrSet('a', async () => 1)
    const breakers = cache.stats().breakers
    expect(Object.values(breakers)).toEqual(['closed'])
    expect(Object.keys(breakers)[0]).toMatch(/:\d+$/)
  })
})
