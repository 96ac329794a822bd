import type { AddressInfo } from 'node:net'
import express from 'express'
import Fastify from 'fastify'
import { expressGetSession, expressSession } from '../src/express.js'
import { fastifyGetSession, fastifySession } from '../src/fastify.js'
import { httpSession } from '../src/http.js'
import type { RequestSession, SessionStore } from '../src/index.js'
import { listen, sleep } from './fixtures.js'

export type Framework = 'express' | 'fastify' | 'http'
export const FRAMEWORKS: Framework[] = ['express', 'fastify', 'http']

/** Hooks a test can set to act while a request is in flight. */
export interface AppHooks {
  duringSlow?: () => Promise<void> | void
}

interface Reply {
  status: number
  body: unknown
}

/**
 * The same small app for every framework: the action is the path, arguments are the query.
 * Each answers JSON with what the session looked like.
 */
async function act(
  session: RequestSession,
  action: string,
  q: URLSearchParams,
  headers: Record<string, string | string[] | undefined>,
  origin: string,
  hooks: AppHooks,
): Promise<Reply> {
  const view = () => ({ isNew: session.isNew, userId: session.userId, data: session.data })
  switch (action) {
    case 'get':
      return { status: 200, body: view() }
    case 'set':
      session.data[q.get('field')!] = q.get('value')
      return { status: 200, body: view() }
    case 'slow-set':
      await sleep(Number(q.get('delay') ?? 200))
      await hooks.duringSlow?.()
      session.data[q.get('field')!] = q.get('value')
      return { status: 200, body: view() }
    case 'login':
      await session.regenerate({ userId: q.get('user')! })
      return { status: 200, body: view() }
    case 'logout':
      await session.destroy({ everywhere: q.get('everywhere') === '1' })
      return { status: 200, body: { ok: true } }
    case 'csrf':
      return { status: 200, body: { token: session.csrfToken() } }
    case 'csrf-check':
      return session.verifyCsrf(headers['x-csrf-token'])
        ? { status: 200, body: { ok: true } }
        : { status: 403, body: { ok: false } }
    case 'ticket':
      return { status: 200, body: { ticket: await session.issueTicket(q.get('to')!) } }
    case 'redeem':
      return { status: 200, body: { ok: await session.redeemTicket(q.get('ticket')!, origin) } }
    default:
      return { status: 404, body: { error: 'no such action' } }
  }
}

/** A running app; `close()` stops the server and every connection. */
export interface App {
  url: string
  close(): Promise<void>
}

/** Starts the app on `framework`, served as `origin` for SSO tickets. */
export async function startApp(
  framework: Framework,
  store: SessionStore,
  options: { origin?: string; hooks?: AppHooks } = {},
): Promise<App> {
  const origin = options.origin ?? 'https://shop.example'
  const hooks = options.hooks ?? {}
  if (framework === 'express') {
    const app = express()
    app.use(expressSession(store))
    app.all('/:action', async (req, res) => {
      const q = new URL(req.url, 'http://x').searchParams
      const reply = await act(
        expressGetSession(req),
        req.params.action as string,
        q,
        req.headers,
        origin,
        hooks,
      )
      res.status(reply.status).json(reply.body)
    })
    return listen(app)
  }
  if (framework === 'fastify') {
    const app = Fastify()
    app.register(fastifySession(store))
    app.all<{ Params: { action: string } }>('/:action', async (request, reply) => {
      const q = new URL(request.url, 'http://x').searchParams
      const out = await act(
        fastifyGetSession(request),
        request.params.action,
        q,
        request.headers,
        origin,
        hooks,
      )
      reply.code(out.status)
      return out.body
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address() as AddressInfo
    return { url: `http://127.0.0.1:${port}`, close: () => app.close() }
  }
  return listen(
    httpSession(store, async (req, res, session) => {
      const url = new URL(req.url ?? '/', 'http://x')
      const reply = await act(
        session,
        url.pathname.slice(1),
        url.searchParams,
        req.headers,
        origin,
        hooks,
      )
      res.statusCode = reply.status
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(reply.body))
    }),
  )
}
