import type { IncomingMessage } from 'node:http'
import type { Request } from 'express'
import type { FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { afterAll, describe, expectTypeOf, it } from 'vitest'
import { expressGetSession } from '../src/express.js'
import { fastifyGetSession } from '../src/fastify.js'
import { httpSession } from '../src/http.js'
import {
  createSessionStore,
  type Duration,
  type RequestSession,
  type SessionRecord,
  type SessionStore,
  type SuspicionReason,
  type Unsubscribe,
} from '../src/index.js'
import { SECRET } from './fixtures.js'

// A plain interface, with no index signature: what an application writes.
interface CartSession {
  cart: string[]
  lang: 'en' | 'fr'
}

const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false })
afterAll(() => redis.disconnect())

describe('session data types', () => {
  it('follow the interface the store is given, through the store, its sessions and the adapters', () => {
    const store = createSessionStore<CartSession>({ redis, secrets: SECRET })
    expectTypeOf(store).toEqualTypeOf<SessionStore<CartSession>>()
    expectTypeOf(store.create).returns.resolves.toEqualTypeOf<SessionRecord<CartSession>>()
    expectTypeOf<SessionRecord<CartSession>['data']['lang']>().toEqualTypeOf<
      'en' | 'fr' | undefined
    >()
    expectTypeOf(store.loadRequest).returns.resolves.toEqualTypeOf<RequestSession<CartSession>>()
    httpSession(store, (_req: IncomingMessage, _res, session) => {
      expectTypeOf(session).toEqualTypeOf<RequestSession<CartSession>>()
      expectTypeOf(session.data.cart).toEqualTypeOf<string[] | undefined>()
      session.data.lang = undefined // removes the field at commit
      // @ts-expect-error: not a field of CartSession
      session.data.views = 1
    })
    expectTypeOf(expressGetSession<CartSession>)
      .parameter(0)
      .toEqualTypeOf<Request>()
    expectTypeOf(expressGetSession<CartSession>).returns.toEqualTypeOf<
      RequestSession<CartSession>
    >()
    expectTypeOf(fastifyGetSession<CartSession>)
      .parameter(0)
      .toEqualTypeOf<FastifyRequest>()
    expectTypeOf(fastifyGetSession<CartSession>).returns.toEqualTypeOf<
      RequestSession<CartSession>
    >()
    expectTypeOf(store.issueTicket)
      .parameter(1)
      .toEqualTypeOf<{ targetOrigin: string; carry?: readonly ('cart' | 'lang')[] }>()
  })

  it('type events by name, with one payload object, and durations as numbers or unit strings', () => {
    const store = createSessionStore({ redis, secrets: SECRET })
    const off = store.on('suspicion-raised', (event) => {
      expectTypeOf(event.reason).toEqualTypeOf<SuspicionReason>()
      expectTypeOf(event.ip).toEqualTypeOf<string | undefined>()
    })
    expectTypeOf(off).toEqualTypeOf<Unsubscribe>()
    // @ts-expect-error: the event is called suspicion-raised
    store.on('suspicious', () => {})
    expectTypeOf<'15m'>().toExtend<Duration>()
    expectTypeOf<250>().toExtend<Duration>()
    // @ts-expect-error: a string with no unit is not a Duration
    const noUnit: Duration = '30'
    void noUnit
    off()
  })

  it('give RequestSession no public constructor', () => {
    // @ts-expect-error: sessions come from loadRequest or an adapter
    expectTypeOf<ConstructorParameters<typeof RequestSession>>().toBeArray()
  })
})
