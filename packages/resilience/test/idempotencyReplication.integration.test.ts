// The `replication` option: WAIT after a claim and after complete, on the key's own master.
// Shared servers for the cheap cases (the standalone Redis has no replica: WAIT returns 0; the
// shared cluster has one per master: WAIT returns 1); a private cluster of its own for the
// loss case (a replica made to lag, then its master SIGKILLed: ~9 s, marked below).
import {
  type PrivateRedisCluster,
  RIDE_OUT_CLUSTER_OPTIONS,
  redisKeySlot,
  startPrivateRedisCluster,
} from '@ballast/testkit'
import { Cluster } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import {
  createIdempotency,
  DEFAULT_IDEMPOTENCY_REPLICATION_OPTIONS,
  type Idempotency,
  IdempotencyNotReplicatedError,
  InvalidArgumentError,
  isResilienceError,
  type NotReplicatedEvent,
} from '../src/index.js'
import { clusterFixture, NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('idempotency replication (WAIT)', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup()
  })

  describe('options', () => {
    it('is off by default; given, it merges its defaults and checks each field', async () => {
      const prefix = uniquePrefix('replication-options')
      const { redis, cleanup } = await redisFixture(prefix)
      cleanups.push(cleanup)
      expect(DEFAULT_IDEMPOTENCY_REPLICATION_OPTIONS).toEqual({ replicas: 1, timeout: 100 })
      expect(Object.isFrozen(DEFAULT_IDEMPOTENCY_REPLICATION_OPTIONS)).toBe(true)
      const make = (replication: unknown, commandTimeout?: number) => () =>
        createIdempotency({ redis, prefix, replication: replication as never, commandTimeout })
      expect(make(undefined)).not.toThrow()
      expect(make(false)).not.toThrow()
      expect(make({ replicas: undefined, timeout: undefined })).not.toThrow()
      expect(make({ replicas: 0 })).toThrow(
        'invalid option "replication.replicas": expected an integer >= 1, got 0',
      )
      expect(make({ timeout: 0 })).toThrow(InvalidArgumentError)
      expect(make({ timeout: '30' })).toThrow(/replication\.timeout/)
      expect(make({ timeout: '2s' }, 2000)).toThrow(
        /invalid option "replication\.timeout": expected less than commandTimeout \(2000 ms\)/,
      )
      expect(make(true)).toThrow(/invalid option "replication"/)
    })
  })

  describe('on a standalone Redis without replicas', () => {
    it('fails every claim closed with a retryable E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED; the work does not run and the key is given back', async () => {
      const prefix = uniquePrefix('replication-standalone')
      const { redis, cleanup } = await redisFixture(prefix)
      cleanups.push(cleanup)
      const store = createIdempotency({
        redis,
        prefix,
        commandTimeout: NOT_ABOUT_TIMEOUTS,
        replication: { replicas: 1, timeout: '20ms' },
      })
      const events: NotReplicatedEvent[] = []
      store.on('not-replicated', (event) => events.push(event))
      let ran = 0
      const error = await store
        .run('order-1', { sku: 1 }, () => {
          ran++
          return 'charged'
        })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(IdempotencyNotReplicatedError)
      expect(isResilienceError(error) && error.code).toBe('E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED')
      expect(error).toMatchObject({ retryable: true, acknowledged: 0, required: 1 })
      expect(ran).toBe(0)
      expect(events).toEqual([{ key: 'order-1', operation: 'claim', acknowledged: 0, required: 1 }])
      expect(store.stats()).toMatchObject({ claims: 1, notReplicated: 1, held: 0 })
      // given back: a store without the option claims it at once
      const plain = createIdempotency({ redis, prefix, commandTimeout: NOT_ABOUT_TIMEOUTS })
      const outcome = await plain.claim('order-1', { sku: 1 })
      expect(outcome.status).toBe('acquired')
      if (outcome.status === 'acquired') await outcome.claim.release()
      await store.close()
      await plain.close()
    })
  })

  describe('on the shared Redis Cluster (one replica per master)', () => {
    it('runs each key once, its WAIT answered by the key’s own master for keys on every master', async () => {
      const prefix = uniquePrefix('replication-cluster')
      const { cluster, cleanup } = await clusterFixture(prefix)
      cleanups.push(cleanup)
      const store = createIdempotency({
        redis: cluster,
        prefix,
        commandTimeout: NOT_ABOUT_TIMEOUTS,
        // generous: CI's two cores are shared by every test file; WAIT answers as soon as the replica acks
        replication: { replicas: 1, timeout: '5s' },
      })
      const keys = Array.from({ length: 60 }, (_, i) => `order-${i}`)
      const runs = new Map<string, number>()
      const work = (key: string) => () => {
        runs.set(key, (runs.get(key) ?? 0) + 1)
        return key
      }
      const first = await Promise.all(keys.map((key) => store.run(key, key, work(key))))
      const again = await Promise.all(keys.map((key) => store.run(key, key, work(key))))
      expect(first.every((r, i) => r.value === keys[i] && !r.replayed)).toBe(true)
      expect(again.every((r, i) => r.value === keys[i] && r.replayed)).toBe(true)
      expect([...runs.values()].every((n) => n === 1)).toBe(true)
      const masters = new Set(keys.map((key) => masterOf(cluster, store, key)))
      expect(masters.size).toBe(3) // keys on every master
      expect(store.stats()).toMatchObject({ acquired: 60, completed: 60, notReplicated: 0 })
      await store.close()
    })
  })

  // ~9 s (a private cluster of its own: its start, a replica made to lag, its master SIGKILLed and
  // restarted). Without the option, the same steps run the lagging keys' work twice (see
  // clusterFailover.integration.test.ts, "what asynchronous replication loses").
  describe('a lagging replica promoted (SIGSTOP, then its master SIGKILLed)', () => {
    it('claims the replica did not acknowledge fail closed and their work does not run; after the failover every key runs exactly once', async () => {
      let cluster: PrivateRedisCluster | undefined
      let client: Cluster | undefined
      let store: Idempotency | undefined
      try {
        cluster = await startPrivateRedisCluster({ nodeTimeout: 2000 })
        client = new Cluster(cluster.seeds, RIDE_OUT_CLUSTER_OPTIONS)
        client.on('error', () => undefined)
        const prefix = 'idem:wait:'
        store = createIdempotency({
          redis: client,
          prefix,
          commandTimeout: 8000,
          replication: { replicas: 1, timeout: '50ms' },
        })
        const master = await cluster.masterOf(`${prefix}{anchor}`)
        const replica = await cluster.replicaOf(master.port)
        const ranges = await cluster.slotsOf(master.port)
        const onMaster = (key: string) => {
          const slot = redisKeySlot(`${prefix}{${key}}`)
          return ranges.some(([from, to]) => slot >= from && slot <= to)
        }
        const keys: string[] = []
        for (let n = 0; keys.length < 40; n++) if (onMaster(`k${n}`)) keys.push(`k${n}`)
        const runs = new Map<string, number>()
        const work = (key: string) => () => {
          runs.set(key, (runs.get(key) ?? 0) + 1)
          return key
        }
        const s = store
        // replicated: acknowledged by the replica before its lag (on a busy machine a healthy
        // replica may miss the 50 ms now and then: the claim is given back, so retry it, as a
        // caller would on this retryable error)
        for (const key of keys.slice(0, 20)) {
          for (let attempt = 0; ; attempt++) {
            try {
              await s.run(key, key, work(key))
              break
            } catch (error) {
              if (!(error instanceof IdempotencyNotReplicatedError) || attempt > 20) throw error
            }
          }
        }

        await cluster.lagReplica(replica.port)
        const refused: unknown[] = []
        for (const key of keys.slice(20)) {
          await s.run(key, key, work(key)).catch((error: unknown) => refused.push(error))
        }
        expect(refused).toHaveLength(20)
        expect(refused.every((e) => e instanceof IdempotencyNotReplicatedError)).toBe(true)
        expect(keys.slice(20).some((key) => runs.has(key))).toBe(false)

        await cluster.kill(master.port)
        cluster.resume(replica.port)
        await cluster.promote(replica.port)
        // the old master comes back as the new one's replica, so WAIT can be answered again
        await cluster.restart(master.port)
        await cluster.waitHealthy(30_000)

        // a client retrying every key after the failover
        for (const key of keys) {
          for (let attempt = 0; ; attempt++) {
            try {
              await s.run(key, key, work(key))
              break
            } catch (error) {
              // the restarted node may still be syncing: retryable by design
              if (!(isResilienceError(error) && error.retryable) || attempt > 50) throw error
              await sleep(100)
            }
          }
        }
        const twice = keys.filter((key) => (runs.get(key) ?? 0) > 1)
        const never = keys.filter((key) => !runs.has(key))
        expect({ twice, never }).toEqual({ twice: [], never: [] })
      } finally {
        await store?.close()
        client?.disconnect()
        await cluster?.close()
      }
    }, 90_000)
  })
})

/** The address of the master serving `key`'s record, from the client's slots table. */
function masterOf(cluster: Cluster, store: Idempotency, key: string): string {
  return cluster.slots[redisKeySlot(store.redisKey(key))]?.[0] ?? 'unknown'
}
