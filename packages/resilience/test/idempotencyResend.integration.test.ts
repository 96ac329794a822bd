// A script that ran but whose reply was lost is sent again: ioredis does so when a Cluster
// master dies after running it (the promoted replica has the first run's write; seen in
// clusterFailover.integration.test.ts). Each script must answer its own resend as it answered
// the first send: a claim is acquired (not in flight), a complete or a release succeeds (not
// fenced). Here against the real standalone Redis: each script sent twice with the same claim
// id, a store on a client that sends every script twice, and ioredis's own resend: the
// connection cut after the script ran, before its reply arrived.
import { createFaultProxy, type FaultProxy, redisUrl } from '@ballast/testkit'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createIdempotency,
  type IdempotencyClaim,
  IdempotencyInFlightError,
  type IdempotencyOptions,
  IdempotentFailureError,
} from '../src/index.js'
import { CLAIM_SCRIPT, COMPLETE_SCRIPT, RELEASE_SCRIPT } from '../src/internal/scripts.js'
import { NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

const prefix = uniquePrefix('idem-resend')
let fixture: Awaited<ReturnType<typeof redisFixture>>
let redis: Redis
let n = 0
const recordKey = () => `${prefix}{k${++n}}`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  fixture = await redisFixture(prefix)
  redis = fixture.redis
})
afterAll(async () => {
  await fixture.cleanup()
})

const LEASE = 30_000
const RETENTION = 60_000
const claim = (key: string, id: string, lease = LEASE, fingerprint = 'fp') =>
  CLAIM_SCRIPT.run(redis, [key], [fingerprint, lease, RETENTION, id]) as Promise<unknown[]>
const complete = (key: string, token: number, record: string, id: string) =>
  COMPLETE_SCRIPT.run(redis, [key], [String(token), record, RETENTION, id])
const release = (key: string, token: number, id: string) =>
  RELEASE_SCRIPT.run(redis, [key], [String(token), id])

describe('idempotency scripts sent twice with the same claim id (a lost reply, resent)', () => {
  describe('claim', () => {
    it('answers its resend as acquired, with the same token; another claim id still finds it in flight', async () => {
      const key = recordKey()
      expect(await claim(key, 'A')).toEqual(['a', 1, 0])
      expect(await claim(key, 'A')).toEqual(['a', 1, 0])
      expect(await redis.hget(key, 't')).toBe('1')
      const other = (await claim(key, 'B')) as [string, number]
      expect(other[0]).toBe('p')
      expect(other[1]).toBeGreaterThan(LEASE - 5000)
    })

    it('answers the resend of a reclaim as a reclaim, with the reclaim’s token', async () => {
      const key = recordKey()
      expect(await claim(key, 'A', 30)).toEqual(['a', 1, 0])
      await sleep(60)
      expect(await claim(key, 'B')).toEqual(['a', 2, 1])
      expect(await claim(key, 'B')).toEqual(['a', 2, 1])
      // the first holder's own resend, after the key was taken over, is not a claim of its own
      expect((await claim(key, 'A'))[0]).toBe('p')
    })

    it('starts the lease again on a resend, as the first run did', async () => {
      const key = recordKey()
      await claim(key, 'A', 30)
      await sleep(60)
      expect(await claim(key, 'A')).toEqual(['a', 1, 0])
      expect((await claim(key, 'B'))[0]).toBe('p')
    })

    it('finds a record written without a claim id (before this change) in flight, as before', async () => {
      const key = recordKey()
      const [seconds] = await redis.time()
      await redis.hset(key, { s: 'p', f: 'fp', t: 1, l: Number(seconds) * 1000 + LEASE })
      expect((await claim(key, 'A'))[0]).toBe('p')
      expect(await redis.hget(key, 't')).toBe('1')
    })

    it('does not take a claim id left behind by a later claim of a version without claim ids as its own', async () => {
      const key = recordKey()
      await claim(key, 'A')
      // what the previous claim script does when it reclaims: token up, 'c' left as it was
      const [seconds] = await redis.time()
      await redis.hincrby(key, 't', 1)
      await redis.hset(key, { s: 'p', f: 'fp', l: Number(seconds) * 1000 + LEASE })
      expect((await claim(key, 'A'))[0]).toBe('p')
      expect(await complete(key, 1, '{"ok":true,"value":1}', 'A')).toBe(0)
    })
  })

  describe('complete', () => {
    it('answers its resend with success when the record is done with the same token, claim id and result', async () => {
      const key = recordKey()
      await claim(key, 'A')
      expect(await complete(key, 1, '{"ok":true,"value":1}', 'A')).toBe(1)
      expect(await complete(key, 1, '{"ok":true,"value":1}', 'A')).toBe(1)
      expect(await redis.hget(key, 'v')).toBe('{"ok":true,"value":1}')
    })

    it('still fences another claim id, another token or another result', async () => {
      const key = recordKey()
      await claim(key, 'A')
      await complete(key, 1, '{"ok":true,"value":1}', 'A')
      expect(await complete(key, 1, '{"ok":true,"value":1}', 'B')).toBe(0)
      expect(await complete(key, 2, '{"ok":true,"value":1}', 'A')).toBe(0)
      expect(await complete(key, 1, '{"ok":true,"value":2}', 'A')).toBe(0)
      expect(await redis.hget(key, 'v')).toBe('{"ok":true,"value":1}')
    })

    it('still fences a holder whose lease was taken over, even with the result the new holder stored', async () => {
      const key = recordKey()
      await claim(key, 'A', 30)
      await sleep(60)
      await claim(key, 'B')
      expect(await complete(key, 2, '{"ok":true,"value":1}', 'B')).toBe(1)
      expect(await complete(key, 1, '{"ok":true,"value":1}', 'A')).toBe(0)
    })
  })

  describe('release', () => {
    it('answers its resend with success; once another claim took the key, it is fenced', async () => {
      const key = recordKey()
      await claim(key, 'A')
      expect(await release(key, 1, 'A')).toBe(1)
      expect(await release(key, 1, 'A')).toBe(1)
      expect(await release(key, 1, 'B')).toBe(0)
      expect(await claim(key, 'B')).toEqual(['a', 2, 0])
      expect(await release(key, 1, 'A')).toBe(0)
      expect(await redis.hget(key, 's')).toBe('p')
    })
  })
})

/**
 * A client that sends every script twice and answers with the second reply: the first run
 * happened, its reply was lost, the command was resent (as ioredis does after a failover).
 * A first send refused before running (NOSCRIPT) is not resent, as ioredis would not.
 */
function resendingClient(target: Redis): { client: Redis; resent: () => number } {
  let resent = 0
  const client = new Proxy(target, {
    get(object, property) {
      const value = Reflect.get(object, property, object) as unknown
      if (typeof value !== 'function') return value
      const bound = (value as (...args: unknown[]) => unknown).bind(object)
      if (property !== 'evalsha' && property !== 'eval') return bound
      return async (...args: unknown[]) => {
        await bound(...args)
        resent++
        return bound(...args)
      }
    },
  })
  return { client, resent: () => resent }
}

describe('Idempotency on a client that sends every script twice', () => {
  const store = (client: Redis, options: Partial<IdempotencyOptions> = {}) =>
    createIdempotency({ redis: client, prefix, commandTimeout: NOT_ABOUT_TIMEOUTS, ...options })

  it('runs the work once, stores and replays its result: no 409, nothing fenced', async () => {
    const { client, resent } = resendingClient(redis)
    const idempotency = store(client)
    let runs = 0
    const first = await idempotency.run('once', { amount: 1 }, () => ++runs)
    const again = await idempotency.run('once', { amount: 1 }, () => ++runs)
    expect(first).toEqual({ value: 1, replayed: false })
    expect(again).toEqual({ value: 1, replayed: true })
    expect(runs).toBe(1)
    // claim, complete, then the replay's claim: each sent twice
    expect(resent()).toBe(3)
    expect(idempotency.stats()).toMatchObject({
      acquired: 1,
      completed: 1,
      replayed: 1,
      inFlightRefused: 0,
      fenced: 0,
    })
  })

  it('stores a permanent failure once and replays it: not fenced', async () => {
    const { client } = resendingClient(redis)
    const idempotency = store(client)
    const fenced: unknown[] = []
    const notStored: unknown[] = []
    idempotency.on('fenced', (e) => fenced.push(e))
    idempotency.on('result-not-stored', (e) => notStored.push(e))
    let runs = 0
    const permanent = () => {
      runs++
      throw Object.assign(new Error('card declined'), { retryable: false })
    }
    await expect(idempotency.run('declined', undefined, permanent)).rejects.toThrow('card declined')
    await expect(idempotency.run('declined', undefined, permanent)).rejects.toBeInstanceOf(
      IdempotentFailureError,
    )
    expect(runs).toBe(1)
    expect({ fenced, notStored, failed: idempotency.stats().failed }).toEqual({
      fenced: [],
      notStored: [],
      failed: 1,
    })
  })

  it('releases after a transient failure (release answered as released), so a retry runs', async () => {
    const { client } = resendingClient(redis)
    const idempotency = store(client)
    const { status, claim: held } = (await idempotency.claim('transient')) as {
      status: string
      claim: { release(): Promise<boolean> }
    }
    expect(status).toBe('acquired')
    expect(await held.release()).toBe(true)
    expect(await idempotency.run('transient', undefined, () => 'retried')).toEqual({
      value: 'retried',
      replayed: false,
    })
    expect(idempotency.stats()).toMatchObject({ released: 1, fenced: 0, inFlightRefused: 0 })
  })

  it('still refuses another caller while the key is in flight (409)', async () => {
    const { client } = resendingClient(redis)
    const idempotency = store(client)
    const other = store(redis)
    let release!: () => void
    const holding = new Promise<void>((r) => {
      release = r
    })
    let started!: () => void
    const running = new Promise<void>((r) => {
      started = r
    })
    const first = idempotency.run('busy', undefined, async () => {
      started()
      await holding
      return 'done'
    })
    await Promise.race([running, first]) // a first run refused fails here, at once
    await expect(other.run('busy', undefined, () => 'twice')).rejects.toBeInstanceOf(
      IdempotencyInFlightError,
    )
    // and the resending client's own duplicate too: a new claim has a new claim id
    await expect(idempotency.run('busy', undefined, () => 'twice')).rejects.toBeInstanceOf(
      IdempotencyInFlightError,
    )
    release()
    expect(await first).toEqual({ value: 'done', replayed: false })
  })
})

describe('ioredis resends a script whose reply was lost with its connection (fault proxy)', () => {
  let proxy: FaultProxy
  let client: Redis
  beforeAll(async () => {
    const url = new URL(await redisUrl())
    proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
    // ioredis's defaults: on reconnect it resends the commands that had no reply
    // (autoResendUnfulfilledCommands), as a Cluster client does to a promoted replica
    client = new Redis(proxy.url(await redisUrl()), { retryStrategy: () => 50 })
    client.on('error', () => undefined)
    await client.ping() // connected before any latency is added
  })
  afterAll(async () => {
    client.disconnect()
    await proxy.close()
  })

  /**
   * Holds replies back (1 s per chunk, both ways), sends, waits until the record shows the
   * script ran (read on the direct client), then cuts the connection before the reply is
   * delivered: ioredis reconnects and sends the script again.
   */
  async function loseReply<T>(redisKey: string, state: string, send: () => Promise<T>): Promise<T> {
    proxy.setLatency(1000)
    const sent = send()
    try {
      const deadline = Date.now() + 10_000
      while ((await redis.hget(redisKey, 's')) !== state) {
        if (Date.now() > deadline) throw new Error(`the script never wrote s=${state}`)
        await sleep(5)
      }
    } finally {
      proxy.setLatency(0)
    }
    expect(proxy.cut()).toBeGreaterThan(0)
    return sent
  }

  it('a resent claim is acquired (it was refused as in flight, 409), and the work runs once', async () => {
    const idempotency = createIdempotency({
      redis: client,
      prefix,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
    })
    const cutBefore = proxy.stats().cut
    const outcome = await loseReply(idempotency.redisKey('lost-claim'), 'p', () =>
      idempotency.claim('lost-claim', { amount: 1 }),
    )
    expect(proxy.stats().cut).toBeGreaterThan(cutBefore)
    expect(outcome).toMatchObject({ status: 'acquired', claim: { token: 1, reclaimed: false } })
    await (outcome as { claim: IdempotencyClaim }).claim.complete('charged')
    let runs = 0
    expect(await idempotency.run('lost-claim', { amount: 1 }, () => ++runs)).toEqual({
      value: 'charged',
      replayed: true,
    })
    expect(runs).toBe(0)
    expect(idempotency.stats()).toMatchObject({ acquired: 1, inFlightRefused: 0, fenced: 0 })
  })

  it('a resent complete succeeds (it was refused as fenced), and the result is replayed', async () => {
    const idempotency = createIdempotency({
      redis: client,
      prefix,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
    })
    const outcome = await idempotency.claim('lost-complete', { amount: 1 })
    expect(outcome.status).toBe('acquired')
    const held = (outcome as { claim: IdempotencyClaim }).claim
    await loseReply(idempotency.redisKey('lost-complete'), 'd', () => held.complete('charged'))
    let runs = 0
    expect(await idempotency.run('lost-complete', { amount: 1 }, () => ++runs)).toEqual({
      value: 'charged',
      replayed: true,
    })
    expect(runs).toBe(0)
    expect(idempotency.stats()).toMatchObject({ completed: 1, fenced: 0 })
  })
})
