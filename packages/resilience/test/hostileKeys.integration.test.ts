import type { AddressInfo } from 'node:net'
import express from 'express'
import fc from 'fast-check'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expressIdempotency } from '../src/express.js'
import { fastifyIdempotency } from '../src/fastify.js'
import { createIdempotency, type Idempotency, isResilienceError } from '../src/index.js'
import { NOT_ABOUT_TIMEOUTS, redisFixture, uniquePrefix } from './helpers.js'

/** Fixed seed: a failing run replays. */
const SEED = 0xbad1dea
const prefix = uniquePrefix('hostile')
let fixture: Awaited<ReturnType<typeof redisFixture>>
let store: Idempotency

beforeAll(async () => {
  fixture = await redisFixture(prefix)
  store = createIdempotency({ redis: fixture.redis, commandTimeout: NOT_ABOUT_TIMEOUTS, prefix })
})
afterAll(async () => {
  await fixture.cleanup()
})

async function keysUnderPrefix(): Promise<Set<string>> {
  const found = new Set<string>()
  let cursor = '0'
  do {
    const [next, keys] = await fixture.redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
    cursor = next
    for (const k of keys) found.add(k)
  } while (cursor !== '0')
  return found
}

/** Header bytes an HTTP client can send: visible ASCII, space, tab and obs-text (0x80-0xFF). */
const headerValue = fc.string({
  unit: fc
    .oneof(
      fc.integer({ min: 0x20, max: 0x7e }),
      fc.integer({ min: 0x80, max: 0xff }),
      fc.constant(9),
    )
    .map((c) => String.fromCharCode(c)),
  maxLength: 300,
})

describe('hostile idempotency keys against Redis', () => {
  it('fuzz: any key and scope is claimed under the prefix or refused with a typed error', async () => {
    const accepted = new Set<string>()
    const before = await keysUnderPrefix()
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), headerValue, fc.anything()),
        fc.option(fc.string({ unit: 'binary', maxLength: 20 }), { nil: undefined }),
        async (key, scope) => {
          let outcome: Awaited<ReturnType<Idempotency['claim']>>
          try {
            outcome = await store.claim(key as string, { amount: 1 }, { scope })
          } catch (error) {
            expect(isResilienceError(error)).toBe(true)
            expect((error as { code: string }).code).toMatch(
              /^E_RESILIENCE_IDEMPOTENCY_(KEY_INVALID|SCOPE_MISSING)$/,
            )
            return
          }
          const name = store.redisKey(key as string, scope)
          expect(name.startsWith(prefix)).toBe(true)
          expect(await fixture.redis.exists(name)).toBe(1)
          accepted.add(name)
          if (outcome.status === 'acquired') await outcome.claim.complete({ ok: true })
        },
      ),
      { seed: SEED, numRuns: 100 },
    )
    // Every record the run wrote is one of the names the store gave: none anywhere else.
    const after = await keysUnderPrefix()
    expect([...after].filter((k) => !before.has(k)).sort()).toEqual([...accepted].sort())
  })

  it.each([
    ['express', expressApp],
    ['fastify', fastifyApp],
  ])(
    'fuzz: %s answers any Idempotency-Key and user header with 201 or a 4xx problem, never a 5xx',
    async (_name, makeApp) => {
      const app = await makeApp(store)
      try {
        await fc.assert(
          fc.asyncProperty(
            headerValue,
            fc.option(headerValue, { nil: undefined }),
            fc.jsonValue({ maxDepth: 2 }),
            async (key, user, body) => {
              const res = await fetch(`${app.url}/payments`, {
                method: 'POST',
                headers: {
                  'content-type': 'application/json',
                  'idempotency-key': key,
                  ...(user === undefined ? {} : { 'x-user': user }),
                },
                body: JSON.stringify({ body }),
              })
              const text = await res.text()
              // 422: a short key the fuzz drew before, with another body (and the same user)
              expect([201, 400, 422]).toContain(res.status)
              if (res.status !== 201) {
                expect(res.headers.get('content-type')).toContain('application/problem+json')
                expect(JSON.parse(text).code).toMatch(/^E_RESILIENCE_IDEMPOTENCY_/)
              }
            },
          ),
          { seed: SEED, numRuns: 60 },
        )
      } finally {
        await app.close()
      }
    },
  )
})

interface App {
  url: string
  close(): Promise<void>
}

async function expressApp(s: Idempotency): Promise<App> {
  const app = express()
  app.use(express.json())
  app.post(
    '/payments',
    expressIdempotency(s, { scope: (req) => req.get('x-user') }),
    (_req, res) => {
      res.status(201).json({ ok: true })
    },
  )
  const server = app.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((r) => server.close(() => r())),
  }
}

async function fastifyApp(s: Idempotency): Promise<App> {
  const app = Fastify()
  await app.register(async (scope) => {
    await scope.register(
      fastifyIdempotency(s, { scope: (req) => req.headers['x-user'] as string | undefined }),
    )
    scope.post('/payments', async (_req, reply) => reply.code(201).send({ ok: true }))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
    close: () => app.close(),
  }
}
