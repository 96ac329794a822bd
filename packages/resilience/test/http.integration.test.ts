import type { AddressInfo } from 'node:net'
import { createFaultProxy, redisUrl } from '@ballast/testkit'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expressIdempotency, expressRateLimit } from '../src/express.js'
import {
  fastifyIdempotency,
  fastifyIdempotencyHooks,
  fastifyRateLimitHook,
} from '../src/fastify.js'
import {
  createIdempotency,
  createRateLimiter,
  type Idempotency,
  InvalidArgumentError,
} from '../src/index.js'
import { NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

const prefix = uniquePrefix('http')
let fixture: Awaited<ReturnType<typeof redisFixture>>
let store: Idempotency
let n = 0
const key = () => `http-key-${++n}-${Date.now()}`
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** Requests with `hold: true` wait here until the test opens the gate. */
let gate: Promise<void> = Promise.resolve()
let openGate: () => void = () => {}
function closeGate() {
  gate = new Promise<void>((r) => {
    openGate = r
  })
}

beforeAll(async () => {
  fixture = await redisFixture(prefix)
  store = createIdempotency({ redis: fixture.redis, commandTimeout: NOT_ABOUT_TIMEOUTS, prefix })
})
afterAll(async () => {
  await fixture.cleanup()
})

interface App {
  url: string
  charges: () => number
  close(): Promise<void>
}

/** The same payment route on Express or Fastify. `fail` in the body makes it answer 503. */
/** The caller's identity: a stand-in for the user id an authentication middleware sets. */
const USER = 'x-user'

async function expressApp(s: Idempotency): Promise<App> {
  let charges = 0
  const app = express()
  app.use(express.json())
  const idempotent = expressIdempotency(s, { scope: (req) => req.get(USER) })
  app.post('/payments', idempotent, async (req, res) => {
    charges++
    if (req.body.hold) await gate
    if (req.body.fail) {
      res.status(503).json({ error: 'psp down' })
      return
    }
    res
      .status(201)
      .setHeader('x-charge-id', `ch_${charges}`)
      .json({ charged: req.body.amount, n: charges })
  })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    charges: () => charges,
    close: () => new Promise((r) => server.close(() => r())),
  }
}

async function fastifyApp(s: Idempotency): Promise<App> {
  let charges = 0
  const app: FastifyInstance = Fastify()
  await app.register(async (scope) => {
    await scope.register(
      fastifyIdempotency(s, { scope: (req) => req.headers[USER] as string | undefined }),
    )
    scope.post('/payments', async (req, reply) => {
      const body = req.body as { amount: number; hold?: boolean; fail?: boolean }
      charges++
      if (body.hold) await gate
      if (body.fail) return reply.code(503).send({ error: 'psp down' })
      return reply
        .code(201)
        .header('x-charge-id', `ch_${charges}`)
        .send({ charged: body.amount, n: charges })
    })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
    charges: () => charges,
    close: () => app.close(),
  }
}

function post(app: App, body: unknown, idempotencyKey?: string, user: string | null = 'alice') {
  return fetch(`${app.url}/payments`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey }),
      ...(user === null ? {} : { [USER]: user }),
    },
    body: JSON.stringify(body),
  })
}

describe.each([
  ['express', expressApp],
  ['fastify', fastifyApp],
])('%s idempotency adapter', (_name, makeApp) => {
  let app: App
  beforeAll(async () => {
    app = await makeApp(store)
  })
  afterAll(async () => {
    await app.close()
  })

  it('answers 400 for a missing or malformed key, without charging', async () => {
    const before = app.charges()
    const missing = await post(app, { amount: 1 })
    expect(missing.status).toBe(400)
    expect(missing.headers.get('content-type')).toContain('application/problem+json')
    expect(await missing.json()).toMatchObject({
      status: 400,
      code: 'E_RESILIENCE_IDEMPOTENCY_KEY_INVALID',
    })
    expect((await post(app, { amount: 1 }, 'has spaces in it')).status).toBe(400)
    expect(app.charges()).toBe(before)
  })

  it('replays the stored status, headers and body with a replay marker', async () => {
    const k = key()
    const first = await post(app, { amount: 100 }, k)
    const firstBody = await first.json()
    expect(first.status).toBe(201)
    expect(first.headers.get('idempotent-replayed')).toBeNull()
    const before = app.charges()
    const again = await post(app, { amount: 100 }, k)
    expect(again.status).toBe(201)
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect(again.headers.get('x-charge-id')).toBe(first.headers.get('x-charge-id'))
    expect(await again.json()).toEqual(firstBody)
    expect(app.charges()).toBe(before)
  })

  it('answers 422 when the key is reused with a different payload', async () => {
    const k = key()
    await post(app, { amount: 100 }, k)
    const before = app.charges()
    const res = await post(app, { amount: 5000 }, k)
    expect(res.status).toBe(422)
    expect(app.charges()).toBe(before)
  })

  it('answers 409 with Retry-After while the first request is in flight; the charge happens once', async () => {
    const k = key()
    const before = app.charges()
    closeGate()
    const first = post(app, { amount: 7, hold: true }, k)
    while (app.charges() === before) await sleep(5) // the first request is in the handler
    const dupes = await Promise.all(
      Array.from({ length: 20 }, () => post(app, { amount: 7, hold: true }, k)),
    )
    openGate()
    expect(dupes.map((r) => r.status)).toEqual(Array(20).fill(409))
    expect(Number(dupes[0]!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect((await first).status).toBe(201)
    expect(app.charges()).toBe(before + 1)
  })

  it('gives two users with the same key and body each their own response', async () => {
    const k = key()
    const alice = await post(app, { amount: 30 }, k, 'alice')
    const bob = await post(app, { amount: 30 }, k, 'bob')
    expect([alice.status, bob.status]).toEqual([201, 201])
    expect(bob.headers.get('idempotent-replayed')).toBeNull()
    expect(bob.headers.get('x-charge-id')).not.toBe(alice.headers.get('x-charge-id'))
    const aliceAgain = await post(app, { amount: 30 }, k, 'alice')
    expect(aliceAgain.headers.get('idempotent-replayed')).toBe('true')
    expect(aliceAgain.headers.get('x-charge-id')).toBe(alice.headers.get('x-charge-id'))
  })

  it('does not let a key squatted by one user answer another user with 409 or 422', async () => {
    const k = key()
    const before = app.charges()
    closeGate()
    // mallory holds the key in flight, and has used it with another body
    const squat = post(app, { amount: 1, hold: true }, k, 'mallory')
    while (app.charges() === before) await sleep(5)
    const victim = await post(app, { amount: 40 }, k, 'victim')
    openGate()
    expect(victim.status).toBe(201)
    expect(victim.headers.get('idempotent-replayed')).toBeNull()
    expect((await squat).status).toBe(201)
    expect(app.charges()).toBe(before + 2)
  })

  it('answers 400 without running the handler when the request has no scope value', async () => {
    const before = app.charges()
    const res = await post(app, { amount: 1 }, key(), null)
    expect(res.status).toBe(400)
    expect(await res.json()).toMatchObject({ code: 'E_RESILIENCE_IDEMPOTENCY_SCOPE_MISSING' })
    expect(app.charges()).toBe(before)
  })

  it('releases the key on a 5xx so the client’s retry runs again', async () => {
    const k = key()
    const before = app.charges()
    expect((await post(app, { amount: 9, fail: true }, k)).status).toBe(503)
    const retried = await post(app, { amount: 9, fail: true }, k)
    expect(retried.status).toBe(503)
    expect(retried.headers.get('idempotent-replayed')).toBeNull()
    expect(app.charges()).toBe(before + 2)
  })
})

describe('idempotency adapters when Redis is unreachable', () => {
  it('answer 503 and do not run the handler (fail closed)', async () => {
    const url = new URL(await redisUrl())
    const proxy = await createFaultProxy({ host: url.hostname, port: Number(url.port || 6379) })
    const redis = new Redis(proxy.url(await redisUrl()), {
      maxRetriesPerRequest: 0,
      retryStrategy: () => 50,
    })
    const down = createIdempotency({ redis, prefix, commandTimeout: 200 })
    const apps = [await expressApp(down), await fastifyApp(down)]
    try {
      proxy.blackhole()
      proxy.cut()
      for (const app of apps) {
        const res = await post(app, { amount: 1 }, key())
        expect(res.status).toBe(503)
        expect(await res.json()).toMatchObject({ code: 'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE' })
        expect(app.charges()).toBe(0)
      }
    } finally {
      for (const app of apps) await app.close()
      proxy.restore()
      redis.disconnect()
      await proxy.close()
    }
  })
})

describe('idempotency adapters with replication on a Redis without replicas', () => {
  it('answer 503 E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED and do not run the handler', async () => {
    const unreplicated = createIdempotency({
      redis: fixture.redis,
      prefix,
      commandTimeout: NOT_ABOUT_TIMEOUTS,
      replication: { replicas: 1, timeout: 10 },
    })
    const apps = [await expressApp(unreplicated), await fastifyApp(unreplicated)]
    try {
      for (const app of apps) {
        const res = await post(app, { amount: 1 }, key())
        expect(res.status).toBe(503)
        expect(res.headers.get('retry-after')).toBe('1')
        expect(await res.json()).toMatchObject({ code: 'E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED' })
        expect(app.charges()).toBe(0)
      }
    } finally {
      for (const app of apps) await app.close()
    }
  })
})

describe('rate limit adapters', () => {
  it('express answers 429 with Retry-After once the budget is spent', async () => {
    const limiter = createRateLimiter({
      redis: fixture.redis,
      prefix: `${prefix}rl:`,
      limit: 2,
      interval: 10_000,
    })
    const app = express()
    app.post('/login', expressRateLimit(limiter, { key: () => 'alice' }), (_req, res) => {
      res.status(204).end()
    })
    const server = app.listen(0, '127.0.0.1')
    await new Promise((r) => server.once('listening', r))
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    try {
      const statuses = []
      for (let i = 0; i < 3; i++) statuses.push(await fetch(`${base}/login`, { method: 'POST' }))
      expect(statuses.map((r) => r.status)).toEqual([204, 204, 429])
      expect(Number(statuses[2]!.headers.get('retry-after'))).toBe(5)
      expect(await statuses[2]!.json()).toMatchObject({
        code: 'E_RESILIENCE_RATE_LIMITED',
        status: 429,
      })
    } finally {
      await new Promise((r) => server.close(r))
    }
  })

  it('fastify answers 429 with Retry-After once the budget is spent', async () => {
    const limiter = createRateLimiter({ limit: 1, interval: 3000 })
    const app = Fastify()
    app.post(
      '/login',
      { onRequest: fastifyRateLimitHook(limiter, { key: () => 'bob' }) },
      async (_req, reply) => reply.code(204).send(),
    )
    // idempotencyHooks are usable per route as well
    app.post('/pay', { ...fastifyIdempotencyHooks(store, { scope: false }) }, async () => ({
      ok: true,
    }))
    await app.listen({ port: 0, host: '127.0.0.1' })
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
    try {
      const a = await fetch(`${base}/login`, { method: 'POST' })
      const b = await fetch(`${base}/login`, { method: 'POST' })
      expect([a.status, b.status]).toEqual([204, 429])
      expect(Number(b.headers.get('retry-after'))).toBe(3)
      const k = key()
      const pay = () => fetch(`${base}/pay`, { method: 'POST', headers: { 'idempotency-key': k } })
      expect((await pay()).headers.get('idempotent-replayed')).toBeNull()
      expect((await pay()).headers.get('idempotent-replayed')).toBe('true')
    } finally {
      await app.close()
    }
  })
})

describe('adapter options', () => {
  it('throw at construction naming the option', () => {
    const limiter = createRateLimiter({ limit: 1 })
    expect(() => expressIdempotency(store, { header: '' })).toThrow('invalid option "header"')
    expect(() => expressIdempotency(store, { methods: 'POST' as never })).toThrow(
      'invalid option "methods"',
    )
    expect(() => fastifyIdempotencyHooks(store, { replayHeader: '' })).toThrow(
      'invalid option "replayHeader"',
    )
    expect(() => expressRateLimit(limiter, { cost: 0 })).toThrow('invalid option "cost"')
    expect(() => fastifyRateLimitHook(limiter, { key: 'ip' as never })).toThrow(
      'invalid option "key"',
    )
  })

  it('refuse to build without a scope function or an explicit scope: false', () => {
    for (const build of [
      () => expressIdempotency(store),
      () => expressIdempotency(store, {}),
      () => fastifyIdempotencyHooks(store),
      () => fastifyIdempotency(store, { scope: undefined }),
      () => expressIdempotency(store, { scope: 'user' as never }),
      () => fastifyIdempotencyHooks(store, { scope: true as never }),
    ]) {
      let error: unknown
      try {
        build()
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(InvalidArgumentError)
      expect((error as Error).message).toContain('invalid option "scope"')
    }
    expect(() => expressIdempotency(store, { scope: false })).not.toThrow()
    expect(() => fastifyIdempotencyHooks(store, { scope: (req) => req.ip })).not.toThrow()
  })
})

describe('idempotency adapters with a store from another copy of the package', () => {
  /** An error as another copy (the CJS build beside the ESM one) throws it: branded, not our class. */
  function foreign(code: string): Error {
    const error = Object.assign(new Error(code), { code, retryable: false })
    return Object.defineProperty(error, Symbol.for('ballast.error'), {
      value: '@ballast/resilience',
    })
  }
  const storeThrowing = (code: string) =>
    ({
      failOpen: false,
      claim: () => Promise.reject(foreign(code)),
    }) as unknown as Idempotency

  it.each([
    ['E_RESILIENCE_IDEMPOTENCY_KEY_INVALID', 400],
    ['E_RESILIENCE_IDEMPOTENCY_SCOPE_MISSING', 400],
    ['E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE', 503],
    ['E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED', 503],
  ])('answer %s with %i on Express and Fastify, not 500', async (code, status) => {
    const s = storeThrowing(code)
    for (const makeApp of [expressApp, fastifyApp]) {
      const app = await makeApp(s)
      try {
        const res = await post(app, { amount: 1 }, key())
        expect(res.status).toBe(status)
        expect(await res.json()).toMatchObject({ code })
        expect(app.charges()).toBe(0)
      } finally {
        await app.close()
      }
    }
  })
})
