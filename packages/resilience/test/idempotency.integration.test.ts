import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createIdempotency,
  IdempotencyClaim,
  IdempotencyFencedError,
  IdempotencyInFlightError,
  IdempotencyKeyInvalidError,
  IdempotencyMismatchError,
  IdempotencyScopeMissingError,
  IdempotencyUnavailableError,
  IdempotentFailureError,
  InvalidArgumentError,
} from '../src/index.js'
import { clusterFixture, NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = join(here, '..', '..', '..')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const prefix = uniquePrefix('idem')
let fixture: Awaited<ReturnType<typeof redisFixture>>
let n = 0
const key = () => `key-${++n}-${Date.now()}`

beforeAll(async () => {
  fixture = await redisFixture(prefix)
})
afterAll(async () => {
  await fixture.cleanup()
})

describe('Idempotency (Redis)', () => {
  it('runs the work once and replays its result without running it again', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    const k = key()
    let runs = 0
    const first = await store.run(k, { amount: 100 }, () => ({ receipt: ++runs }))
    const second = await store.run(k, { amount: 100 }, () => ({ receipt: ++runs }))
    expect(first).toEqual({ value: { receipt: 1 }, replayed: false })
    expect(second).toEqual({ value: { receipt: 1 }, replayed: true })
    expect(runs).toBe(1)
    expect(store.stats()).toMatchObject({ acquired: 1, replayed: 1, completed: 1, held: 0 })
    const ttl = await fixture.redis.pttl(store.redisKey(k))
    expect(ttl).toBeGreaterThan(86_000_000)
    expect(ttl).toBeLessThanOrEqual(86_400_000)
  })

  it('200 concurrent calls with one key: the handler runs exactly once, every caller gets the result or 409', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    const k = key()
    let runs = 0
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () =>
        store.run(k, { amount: 5 }, async () => {
          runs++
          await sleep(50)
          return 'charged'
        }),
      ),
    )
    const fresh = results.filter((r) => r.status === 'fulfilled' && !r.value.replayed)
    const replayed = results.filter((r) => r.status === 'fulfilled' && r.value.replayed)
    const inFlight = results.filter(
      (r) => r.status === 'rejected' && r.reason instanceof IdempotencyInFlightError,
    )
    const lost = results.length - fresh.length - replayed.length - inFlight.length
    expect(runs).toBe(1)
    expect(fresh).toHaveLength(1)
    expect(lost).toBe(0)
    expect(inFlight.length + replayed.length).toBe(199)
    for (const r of replayed) expect(r.status === 'fulfilled' && r.value.value).toBe('charged')
  })

  it('200 concurrent calls with one key and a bounded wait: all get the one result', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
      wait: 5000,
    })
    const k = key()
    let runs = 0
    const results = await Promise.all(
      Array.from({ length: 200 }, () =>
        store.run(k, undefined, async () => {
          runs++
          await sleep(100)
          return { order: 42 }
        }),
      ),
    )
    expect(runs).toBe(1)
    expect(results.filter((r) => !r.replayed)).toHaveLength(1)
    expect(results.every((r) => r.value.order === 42)).toBe(true)
  })

  it('serves a message consumer: message id as key, raw bytes as fingerprint, void handler', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    const messageId = key()
    const content = Buffer.from(JSON.stringify({ orderId: 7, sku: 'A-1', qty: 2 }))
    let reserved = 0
    const handler = async () => {
      reserved++
    }
    await expect(store.run(messageId, content, handler)).resolves.toEqual({
      value: undefined,
      replayed: false,
    })
    // the broker redelivers the same message: the handler does not run again
    await expect(store.run(messageId, Buffer.from(content), handler)).resolves.toEqual({
      value: undefined,
      replayed: true,
    })
    // a different message reusing the id is refused
    await expect(store.run(messageId, Buffer.from('other'), handler)).rejects.toBeInstanceOf(
      IdempotencyMismatchError,
    )
    expect(reserved).toBe(1)
  })

  it('refuses the same key with a different payload (422) and runs nothing', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    const k = key()
    await store.run(k, { amount: 100 }, () => 'ok')
    let ran = false
    const error = await store
      .run(k, { amount: 999 }, () => {
        ran = true
      })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(IdempotencyMismatchError)
    expect(ran).toBe(false)
    expect(store.stats()).toMatchObject({ mismatched: 1, redisCallsFailed: 0 })
    // key order does not matter: a canonicalized payload is the same request
    await expect(store.run(k, { amount: 100 }, () => 'again')).resolves.toMatchObject({
      replayed: true,
    })
  })

  it('refuses a missing or malformed key (400)', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    for (const bad of ['', 'has space', 'x'.repeat(256), 'ключ']) {
      await expect(store.run(bad, {}, () => 1)).rejects.toBeInstanceOf(IdempotencyKeyInvalidError)
    }
    await expect(store.run(undefined as unknown as string, {}, () => 1)).rejects.toThrow('required')
  })

  it('releases the key after a transient failure, so a retry runs', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    const k = key()
    let runs = 0
    await expect(
      store.run(k, {}, () => {
        runs++
        throw Object.assign(new Error('gateway timeout'), { retryable: true })
      }),
    ).rejects.toThrow('gateway timeout')
    await expect(store.run(k, {}, () => ++runs)).resolves.toEqual({ value: 2, replayed: false })
    expect(store.stats()).toMatchObject({ released: 1 })
  })

  it('stores a permanent failure and replays it without running the work', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
    })
    const k = key()
    let runs = 0
    const declined = Object.assign(new Error('card declined'), {
      retryable: false,
      code: 'E_DECLINED',
    })
    await expect(
      store.run(k, {}, () => {
        runs++
        throw declined
      }),
    ).rejects.toBe(declined)
    const replay = await store.run(k, {}, () => ++runs).catch((e: unknown) => e)
    expect(replay).toBeInstanceOf(IdempotentFailureError)
    expect(replay).toMatchObject({ message: 'card declined', originalCode: 'E_DECLINED' })
    expect(runs).toBe(1)
  })

  it('renews the lease while the work runs, so a long job is not reclaimed', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
      lease: 400,
    })
    const k = key()
    let runs = 0
    const long = store.run(k, {}, async () => {
      runs++
      await sleep(1300)
      return 'done'
    })
    await sleep(900) // more than two leases
    await expect(store.run(k, {}, () => ++runs)).rejects.toBeInstanceOf(IdempotencyInFlightError)
    await expect(long).resolves.toEqual({ value: 'done', replayed: false })
    expect(runs).toBe(1)
    expect(store.stats().inFlightRefused).toBe(1)
  })

  it('a holder killed with SIGKILL: after the lease a retry runs once, and its late write is fenced', async () => {
    const lease = 1500
    const k = key()
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--conditions=@ballast/source', join(here, 'fixtures', 'holder.ts')],
      {
        cwd: repoRoot,
        env: {
          ...process.env,
          REDIS_URL: await redisUrl(),
          PREFIX: prefix,
          KEY: k,
          LEASE: String(lease),
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    )
    const line = await new Promise<string>((resolve, reject) => {
      let out = ''
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('\n')) resolve(out.trim())
      })
      child.on('exit', (code) => reject(new Error(`holder exited early with ${code}: ${out}`)))
    })
    const held = JSON.parse(line) as { status: string; token: number }
    expect(held.status).toBe('acquired')
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited

    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
      lease,
    })
    let runs = 0
    // while the dead holder's lease lasts, a retry is refused
    await expect(store.run(k, { amount: 100 }, () => ++runs)).rejects.toBeInstanceOf(
      IdempotencyInFlightError,
    )
    await sleep(lease + 100)
    const events: boolean[] = []
    store.on('acquired', (e) => events.push(e.reclaimed))
    await expect(store.run(k, { amount: 100 }, () => ++runs)).resolves.toEqual({
      value: 1,
      replayed: false,
    })
    expect(events).toEqual([true])
    // The dead holder's late write, with its stale fencing token, is refused...
    const stale = IdempotencyClaim.acquired(store, k, 'dead-holder', held.token, false, lease)
    const fenced = await stale.complete({ receipt: 'from the dead' }).catch((e: unknown) => e)
    expect(fenced).toBeInstanceOf(IdempotencyFencedError)
    expect(store.stats().fenced).toBe(1)
    // ...and the stored result is the live holder's; the work ran once.
    await expect(store.run(k, { amount: 100 }, () => ++runs)).resolves.toEqual({
      value: 1,
      replayed: true,
    })
    expect(runs).toBe(1)
  })

  it('aborts the holder’s signal when another holder took the key', async () => {
    const store = createIdempotency({
      redis: fixture.redis,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      prefix,
      lease: 100,
    })
    const k = key()
    const outcome = await store.claim(k)
    if (outcome.status !== 'acquired') throw new Error(outcome.status)
    // simulate a takeover: bump the fencing token behind the holder's back
    await fixture.redis.hincrby(store.redisKey(k), 't', 1)
    await sleep(150)
    expect(outcome.claim.signal.aborted).toBe(true)
    expect(outcome.claim.signal.reason).toBeInstanceOf(IdempotencyFencedError)
  })

  describe('scope', () => {
    it('keeps one record per scope: the same key and input run once for each user', async () => {
      const store = createIdempotency({
        redis: fixture.redis,
        commandTimeout: NOT_ABOUT_TIMEOUTS,
        prefix,
      })
      const k = key()
      let runs = 0
      const work = () => ({ receipt: ++runs })
      const alice = await store.run(k, { amount: 1 }, work, { scope: 'user:alice' })
      const bob = await store.run(k, { amount: 1 }, work, { scope: 'user:bob' })
      const aliceAgain = await store.run(k, { amount: 1 }, work, { scope: 'user:alice' })
      expect(alice).toEqual({ value: { receipt: 1 }, replayed: false })
      expect(bob).toEqual({ value: { receipt: 2 }, replayed: false })
      expect(aliceAgain).toEqual({ value: { receipt: 1 }, replayed: true })
      // a key one user holds (or used with another body) is nothing to another user
      const held = await store.claim(k, { amount: 999 }, { scope: 'user:mallory' })
      expect(held.status).toBe('acquired')
      expect((await store.claim(k, { amount: 5 }, { scope: 'user:carol' })).status).toBe('acquired')
    })

    it('encodes the scope unambiguously, apart from unscoped keys and under the prefix', () => {
      const store = createIdempotency({ redis: fixture.redis, prefix })
      expect(store.redisKey('c', 'a:b')).not.toBe(store.redisKey('b:c', 'a'))
      expect(store.redisKey('bc', 'a')).not.toBe(store.redisKey('c', 'ab'))
      expect(store.redisKey('k', 'u')).not.toBe(store.redisKey('k'))
      for (const k of [store.redisKey('k', 'a}b{c'), store.redisKey('k')]) {
        expect(k.startsWith(prefix)).toBe(true)
      }
      // the hash tag is the key alone: every command of one key goes to one Cluster slot
      expect(store.redisKey('k', 'tenant-7')).toMatch(/\{k\}$/)
    })

    it('refuses an empty scope with a typed error and runs nothing', async () => {
      const store = createIdempotency({ redis: fixture.redis, prefix })
      let runs = 0
      for (const scope of ['', 7 as never, null as never]) {
        const error = await store.run(key(), {}, () => ++runs, { scope }).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(IdempotencyScopeMissingError)
        expect((error as IdempotencyScopeMissingError).code).toBe(
          'E_RESILIENCE_IDEMPOTENCY_SCOPE_MISSING',
        )
      }
      expect(runs).toBe(0)
    })
  })

  describe('Redis unreachable (fault proxy)', () => {
    let proxy: FaultProxy
    let redis: Redis
    beforeAll(async () => {
      const url = new URL(await redisUrl())
      proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
      redis = new Redis(proxy.url(await redisUrl()), {
        maxRetriesPerRequest: 1,
        retryStrategy: () => 50,
      })
    })
    afterAll(async () => {
      proxy.restore()
      redis.disconnect()
      await proxy.close()
    })

    it('fails closed with a typed error and does not run the handler; recovers after', async () => {
      const store = createIdempotency({ redis, prefix, commandTimeout: 300 })
      const k = key()
      const failedCalls: string[] = []
      store.on('redis-call-failed', ({ key, error }) => failedCalls.push(`${key}:${error.code}`))
      proxy.blackhole()
      proxy.cut()
      let runs = 0
      const error = await store.run(k, {}, () => ++runs).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(IdempotencyUnavailableError)
      expect(failedCalls).toEqual([`${k}:E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE`])
      expect(store.stats().redisCallsFailed).toBe(1)
      expect((error as IdempotencyUnavailableError).code).toBe(
        'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE',
      )
      // the command timeout answered, not a hang until Redis came back (asserted by which
      // path ran, not by the clock)
      expect((error as Error).message).toContain('did not answer within 300 ms')
      expect(runs).toBe(0)
      proxy.restore()
      await sleep(300)
      await expect(store.run(k, {}, () => ++runs)).resolves.toEqual({ value: 1, replayed: false })
    })

    it('runs the handler unprotected when configured to fail open', async () => {
      const store = createIdempotency({ redis, prefix, commandTimeout: 300, failOpen: true })
      const opened: string[] = []
      store.on('ran-unprotected', (e) => opened.push(e.key))
      const k = key()
      proxy.blackhole()
      proxy.cut()
      await expect(store.run(k, {}, () => 'unprotected')).resolves.toEqual({
        value: 'unprotected',
        replayed: false,
      })
      expect(opened).toEqual([k])
      proxy.restore()
      await sleep(300)
    })
  })

  describe('Redis Cluster', () => {
    it('keeps each key in one slot and runs the handler once under 100 concurrent calls', async () => {
      const clusterPrefix = uniquePrefix('idem-cluster')
      const { cluster, cleanup } = await clusterFixture(clusterPrefix)
      try {
        const store = createIdempotency({
          redis: cluster,
          commandTimeout: NOT_ABOUT_TIMEOUTS,
          prefix: clusterPrefix,
        })
        const slots = new Set<number>()
        for (let i = 0; i < 20; i++) {
          const k = `order-${i}`
          const [a, b] = await Promise.all([
            cluster.cluster('KEYSLOT', store.redisKey(k)) as Promise<number>,
            cluster.cluster('KEYSLOT', k) as Promise<number>,
          ])
          expect(a).toBe(b)
          slots.add(a)
          let runs = 0
          const results = await Promise.allSettled(
            Array.from({ length: 100 }, () =>
              store.run(k, { i }, async () => {
                runs++
                await sleep(10)
                return i
              }),
            ),
          )
          expect(runs).toBe(1)
          expect(results.filter((r) => r.status === 'fulfilled' && !r.value.replayed)).toHaveLength(
            1,
          )
        }
        expect(slots.size).toBeGreaterThan(5) // keys spread over the cluster
      } finally {
        await cleanup()
      }
    })

    it("keeps a scoped key in its key's slot, one record per scope, on the Cluster", async () => {
      const clusterPrefix = uniquePrefix('idem-cluster-scope')
      const { cluster, cleanup } = await clusterFixture(clusterPrefix)
      try {
        const store = createIdempotency({
          redis: cluster,
          commandTimeout: NOT_ABOUT_TIMEOUTS,
          prefix: clusterPrefix,
        })
        const slot = (name: string) => cluster.cluster('KEYSLOT', name) as Promise<number>
        // Each record is one Redis key (scripts touch KEYS[1] only), so any name works on a
        // Cluster; for a key without braces the slot is the key's own, whatever the scope.
        for (const k of ['order-1', 'order-2', 'a}b', '{x}', 'p{q}r', '}{']) {
          if (!/[{}]/.test(k)) {
            for (const scope of ['user:alice', 'tenant{7}', '}']) {
              expect(await slot(store.redisKey(k, scope))).toBe(await slot(k))
            }
          }
          let runs = 0
          const work = async () => ++runs
          const alice = await store.run(k, { k }, work, { scope: 'user:alice' })
          const bob = await store.run(k, { k }, work, { scope: 'user:bob' })
          const again = await store.run(k, { k }, work, { scope: 'user:alice' })
          expect([alice.replayed, bob.replayed, again.replayed]).toEqual([false, false, true])
          expect(again.value).toBe(alice.value)
          expect(runs).toBe(2)
        }
      } finally {
        await cleanup()
      }
    })
  })

  describe('options', () => {
    it.each([
      [{}, 'redis'],
      [{ lease: 10 }, 'lease'],
      [{ retention: 1000, lease: 5000 }, 'retention'],
      [{ prefix: 'a{b' }, 'prefix'],
      [{ wait: -1 }, 'wait'],
      [{ failOpen: 'yes' }, 'failOpen'],
      [{ keyPattern: 'x' }, 'keyPattern'],
      // test() on a g or y RegExp resumes at lastIndex: the same key would pass, then fail
      [{ keyPattern: /^[a-z]+$/g }, 'keyPattern'],
      [{ keyPattern: /^[a-z]+$/y }, 'keyPattern'],
    ])('rejects %j naming %s', (options, name) => {
      const redis = 'redis' in options || name === 'redis' ? undefined : fixture.redis
      expect(() => createIdempotency({ redis, ...options } as never)).toThrow(
        `invalid option "${name}"`,
      )
    })

    it.each([Number.NaN, -1, '2000'])(
      'refuses a claim with wait %j naming it, before any round trip',
      async (wait) => {
        // NaN once made the duplicate poll Redis every millisecond until the holder's lease ran out
        const store = createIdempotency({ redis: fixture.redis, prefix })
        const error = await store
          .claim(key(), undefined, { wait: wait as never })
          .catch((e: unknown) => e)
        expect(error).toBeInstanceOf(InvalidArgumentError)
        // a per-call argument: the same message shape, with "argument"
        expect((error as Error).message).toContain('invalid argument "wait"')
        expect(store.stats().claims).toBe(0)
      },
    )
  })
})
