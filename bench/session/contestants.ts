/**
 * The apps the session benchmarks serve, one per contestant, each run in its own child process
 * (see http.bench.ts) so the server does not share an event loop with the load generator. Every
 * app answers GET /read (reads the session, changes nothing) and GET /write (changes one field),
 * and GET /login creates the session the load then reuses.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSessionStore } from '@ballast/session'
import { expressGetSession as expressGet, expressSession } from '@ballast/session/express'
import { fastifyGetSession as fastifyGet, fastifySession } from '@ballast/session/fastify'
import { httpSession } from '@ballast/session/http'
import fastifyCookie from '@fastify/cookie'
import fastifySessionPeer from '@fastify/session'
import { RedisStore } from 'connect-redis'
import express from 'express'
import expressSessionPeer from 'express-session'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { createClient } from 'redis'

export const CONTESTANTS = [
  'express, no session',
  'express + express-session + connect-redis',
  'express + @ballast/session',
  'fastify, no session',
  'fastify + @fastify/session + connect-redis',
  'fastify + @ballast/session',
  'node:http, no session',
  'node:http + @ballast/session',
] as const
export type Contestant = (typeof CONTESTANTS)[number]

const SECRET = 'bench-secret-0123456789-abcdefghijklmnop'
const LOGIN = { userId: 'u1', lang: 'fr', cart: ['sku-1', 'sku-2', 'sku-3'] }

export interface Served {
  port: number
  close(): Promise<void>
}

/** Starts `contestant` against Redis on `redisPort`, on an ephemeral HTTP port. */
export async function serve(contestant: Contestant, redisPort: number): Promise<Served> {
  const prefix = `bench-session:${process.pid}:`
  if (contestant.endsWith('no session')) return serveBaseline(contestant)
  if (contestant.includes('connect-redis')) {
    const client = createClient({ url: `redis://127.0.0.1:${redisPort}` })
    await client.connect()
    const store = new RedisStore({ client, prefix })
    if (contestant.startsWith('express')) {
      const app = express()
      app.use(
        expressSessionPeer({
          store,
          secret: SECRET,
          resave: false,
          saveUninitialized: false,
          cookie: { secure: false },
        }),
      )
      app.get('/login', (req, res) => {
        Object.assign(req.session, LOGIN)
        res.send('ok')
      })
      app.get('/read', (req, res) => {
        res.send(String((req.session as unknown as { userId?: string }).userId))
      })
      app.get('/write', (req, res) => {
        const s = req.session as unknown as { views?: number }
        s.views = (s.views ?? 0) + 1
        res.send(String(s.views))
      })
      return listenNode(app, () => client.quit().then(() => undefined))
    }
    const app = Fastify()
    await app.register(fastifyCookie)
    await app.register(fastifySessionPeer, {
      secret: SECRET,
      store: store as never,
      saveUninitialized: false,
      cookie: { secure: false },
    })
    app.get('/login', async (request) => {
      for (const [k, v] of Object.entries(LOGIN)) request.session.set(k as never, v as never)
      return 'ok'
    })
    app.get('/read', async (request) => String(request.session.get('userId' as never)))
    app.get('/write', async (request) => {
      const views = ((request.session.get('views' as never) as number | undefined) ?? 0) + 1
      request.session.set('views' as never, views as never)
      return String(views)
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    return {
      port: (app.server.address() as AddressInfo).port,
      close: async () => {
        await app.close()
        await client.quit()
      },
    }
  }

  const redis = new Redis({ host: '127.0.0.1', port: redisPort })
  const store = createSessionStore({ redis, secrets: [SECRET], prefix })
  const closeOurs = async () => {
    await store.close()
    await redis.quit()
  }
  if (contestant.startsWith('express')) {
    const app = express()
    app.use(expressSession(store))
    app.get('/login', (req, res) => {
      Object.assign(expressGet(req).data, LOGIN)
      res.send('ok')
    })
    app.get('/read', (req, res) => {
      res.send(String(expressGet(req).data.userId))
    })
    app.get('/write', (req, res) => {
      const data = expressGet(req).data as { views?: number }
      data.views = (data.views ?? 0) + 1
      res.send(String(data.views))
    })
    return listenNode(app, closeOurs)
  }
  if (contestant.startsWith('fastify')) {
    const app = Fastify()
    await app.register(fastifySession(store))
    app.get('/login', async (request) => {
      Object.assign(fastifyGet(request).data, LOGIN)
      return 'ok'
    })
    app.get('/read', async (request) => String(fastifyGet(request).data.userId))
    app.get('/write', async (request) => {
      const data = fastifyGet(request).data as { views?: number }
      data.views = (data.views ?? 0) + 1
      return String(data.views)
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    return {
      port: (app.server.address() as AddressInfo).port,
      close: async () => {
        await app.close()
        await closeOurs()
      },
    }
  }
  return listenNode(
    httpSession(store, (req, res, session) => {
      const data = session.data as { userId?: string; views?: number }
      if (req.url === '/login') {
        Object.assign(data, LOGIN)
        res.end('ok')
      } else if (req.url === '/write') {
        data.views = (data.views ?? 0) + 1
        res.end(String(data.views))
      } else res.end(String(data.userId))
    }),
    closeOurs,
  )
}

/** The same routes without sessions: what the framework costs on its own. */
async function serveBaseline(contestant: Contestant): Promise<Served> {
  const body = 'u1'
  if (contestant.startsWith('express')) {
    const app = express()
    app.get('/login', (_req, res) => {
      res.send('ok')
    })
    app.get('/read', (_req, res) => {
      res.send(body)
    })
    app.get('/write', (_req, res) => {
      res.send(body)
    })
    return listenNode(app, async () => {})
  }
  if (contestant.startsWith('fastify')) {
    const app = Fastify()
    app.get('/login', async () => 'ok')
    app.get('/read', async () => body)
    app.get('/write', async () => body)
    await app.listen({ port: 0, host: '127.0.0.1' })
    return { port: (app.server.address() as AddressInfo).port, close: () => app.close() }
  }
  return listenNode(
    (req, res) => {
      res.end(req.url === '/login' ? 'ok' : body)
    },
    async () => {},
  )
}

async function listenNode(
  handler: Parameters<typeof createServer>[1],
  closeRest: () => Promise<void>,
): Promise<Served> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await closeRest()
    },
  }
}

// Child process entry: `SESSION_BENCH_SERVE=<index> SESSION_BENCH_REDIS_PORT=<port>`.
if (process.env.SESSION_BENCH_SERVE !== undefined) {
  const contestant = CONTESTANTS[Number(process.env.SESSION_BENCH_SERVE)]!
  const served = await serve(contestant, Number(process.env.SESSION_BENCH_REDIS_PORT))
  process.send?.({ port: served.port })
  process.on('message', async (message) => {
    if (message === 'cpu') {
      const { user, system } = process.cpuUsage()
      process.send?.({ cpu: user + system })
      return
    }
    await served.close()
    process.exit(0)
  })
}
