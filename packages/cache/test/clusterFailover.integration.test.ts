// Redis Cluster failover under load (issue 19): a master of a PRIVATE cluster (this file's own
// redis-server processes; the shared 7000-7005 cluster is never killed) is SIGKILLed while
// getOrSet runs in loops on two caches with the default options, one with L1 and one without.
// Long: 8-18 s (a promotion takes ~4 s, or ~13 s when the first election fails).
import {
  type PrivateRedisCluster,
  redisKeySlot,
  startLoad,
  startPrivateRedisCluster,
  summarizeCalls,
} from '@ballast/testkit'
import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCache, DEFAULT_CACHE_OPTIONS, type TwoLevelCache } from '../src/index.js'
import { KeyNames } from '../src/internal/keys.js'

const LOOPS = 8
const KEYS = 400
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

let cluster: PrivateRedisCluster
beforeAll(async () => {
  cluster = await startPrivateRedisCluster({ nodeTimeout: 2000 })
}, 40_000)
afterAll(async () => {
  await cluster?.close()
})

describe('TwoLevelCache while a Cluster master fails over (private cluster, SIGKILL, default options)', () => {
  it('no caller error, every value right, calls bounded by the L2 timeouts; the dead master keys come back to L2 after the promotion (long: 8-18 s)', async () => {
    // what the README recommends for the cache's client: fail fast, the cache has its loader
    const client = new Cluster(cluster.seeds, { enableOfflineQueue: false })
    client.on('error', () => undefined)
    const caches: Record<'l1' | 'noL1', TwoLevelCache<string>> = {
      l1: createCache<string>({ redis: client, namespace: 'failover-l1' }),
      noL1: createCache<string>({ redis: client, namespace: 'failover-no-l1', l1: false }),
    }
    try {
      await new Promise((resolve) => client.once('ready', resolve))
      await Promise.all(Object.values(caches).map((cache) => cache.ready()))
      const keys = Array.from({ length: KEYS }, (_, i) => `item:${i}`)
      const loads = { l1: new Map<string, number>(), noL1: new Map<string, number>() }
      const loader = (which: 'l1' | 'noL1', key: string) => async () => {
        loads[which].set(key, (loads[which].get(key) ?? 0) + 1)
        return `value of ${key}`
      }
      const wrong: string[] = []
      // why L2 calls failed, by the first words of the client's error (CLUSTERDOWN, refused, timeout)
      const l2Failures: Record<string, number> = {}
      const events: Record<string, number> = {}
      for (const name of [
        'bus-disconnected',
        'bus-connected',
        'invalidations-replayed',
        'conflict-detected',
      ] as const)
        caches.noL1.on(name, () => {
          events[name] = (events[name] ?? 0) + 1
        })
      caches.noL1.on('l2-failed', ({ error }) => {
        const cause = (error as { cause?: unknown }).cause
        const text = String(cause instanceof Error ? cause.message : error.message)
        const reason =
          /CLUSTERDOWN|MOVED|Connection is closed|ECONNREFUSED|timed out|did not answer|within/.exec(
            text,
          )?.[0] ?? text.slice(0, 40)
        l2Failures[reason] = (l2Failures[reason] ?? 0) + 1
      })
      // every key in L2 (and the L1 cache's L1) before the load: later loads are extra ones
      for (const which of ['l1', 'noL1'] as const)
        await Promise.all(keys.map((key) => caches[which].getOrSet(key, loader(which, key))))
      const warmed = { l1: new Map(loads.l1), noL1: new Map(loads.noL1) }
      const load = startLoad(LOOPS, async (loop, i, rec) => {
        const which = loop % 2 === 0 ? 'l1' : 'noL1'
        const key = keys[(loop * 53 + i * 7) % KEYS] as string
        const value = await rec.call(which, key, () =>
          caches[which].getOrSet(key, loader(which, key)),
        )
        if (value !== `value of ${key}`) wrong.push(`${which} ${key}: ${String(value)}`)
        // L1 hits never yield: pace every loop (~1 call per ms) so the load leaves CPU to the rest
        await sleep(1)
      })
      await sleep(1000)

      const names = new KeyNames(DEFAULT_CACHE_OPTIONS.prefix, 'failover-no-l1')
      const victim = await cluster.masterOf(names.entry('item:0'))
      const ranges = await cluster.slotsOf(victim.port)
      const onVictim = (key: string) => {
        const slot = redisKeySlot(names.entry(key))
        return ranges.some(([from, to]) => slot >= from && slot <= to)
      }
      await cluster.kill(victim.port)
      const killedAt = performance.now()
      // when L2 serves the dead master's keys again: an L2 read of one of them finds its value
      const victimKey = keys.find(onVictim) as string
      const probe = (async () => {
        while (performance.now() - killedAt < 20_000) {
          if ((await caches.noL1.get(victimKey)) === `value of ${victimKey}`)
            return Math.round(performance.now() - killedAt)
          await sleep(20)
        }
        return undefined
      })()
      const healthyMs = await cluster.waitHealthy(20_000)
      const servedAgainMs = await probe
      await sleep(1000)
      await load.stop()

      const extraLoads = (which: 'l1' | 'noL1', onSlots: (key: string) => boolean) =>
        keys
          .filter(onSlots)
          .reduce(
            (sum, key) => sum + (loads[which].get(key) ?? 0) - (warmed[which].get(key) ?? 0),
            0,
          )
      const figures = {
        l1: summarizeCalls(load.calls, 'l1'),
        noL1: summarizeCalls(load.calls, 'noL1'),
        loaderCallsBeyondOnePerKey: {
          l1: {
            victim: extraLoads('l1', onVictim),
            healthy: extraLoads('l1', (k) => !onVictim(k)),
          },
          noL1: {
            victim: extraLoads('noL1', onVictim),
            healthy: extraLoads('noL1', (k) => !onVictim(k)),
          },
        },
        victimKeys: keys.filter(onVictim).length,
        healthyMs: Math.round(healthyMs),
        servedAgainMs,
        l2FailuresNoL1: l2Failures,
        eventsNoL1: events,
        statsNoL1: caches.noL1.stats(),
      }
      console.info(`[failover cache] ${JSON.stringify(figures)}`)

      expect(wrong).toEqual([])
      expect(figures.l1.errors + figures.noL1.errors).toBe(0)
      // a getOrSet makes at most a read and a write, each bounded by l2Timeout (250 ms), plus a
      // loader that answers at once; generous slack for 2 busy cores
      expect(Math.max(figures.l1.maxMs, figures.noL1.maxMs)).toBeLessThan(2000)
      expect(servedAgainMs).toBeDefined()
    } finally {
      for (const cache of Object.values(caches)) await cache.close()
      client.disconnect()
    }
  }, 60_000)
})
