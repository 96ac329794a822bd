import type { FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify'
import type { SessionUnavailableError } from './errors.js'
import { adapterOptions } from './internal/adapterOptions.js'
import { isUnavailable } from './internal/nodeResponse.js'
import type { RequestSession } from './requestSession.js'
import type { SessionData, SessionStore } from './sessionStore.js'

/** Options of {@link fastifySession}. */
export interface FastifySessionOptions {
  /**
   * Answers a request whose session cannot be read or written because Redis is unreachable;
   * return the payload to send (the status is 503 unless you change it).
   * @default a JSON body `{ error, code: 'E_SESSION_UNAVAILABLE' }` with `Retry-After: 1`
   */
  onUnavailable?:
    | ((error: SessionUnavailableError, request: FastifyRequest, reply: FastifyReply) => unknown)
    | undefined
}

/** Defaults of {@link FastifySessionOptions}; an option given as `undefined` keeps its default. */
export const DEFAULT_FASTIFY_SESSION_OPTIONS: Readonly<FastifySessionOptions> = Object.freeze({
  onUnavailable: undefined,
})

const BODY = JSON.stringify({
  error: 'session store unavailable, try again shortly',
  code: 'E_SESSION_UNAVAILABLE',
})

/**
 * Fastify plugin: decorates `request.session` (read it typed with {@link fastifyGetSession}) and
 * writes changes in `onSend`, before the response goes out. Registered without encapsulation,
 * so it applies to routes of the instance it is registered on.
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { fastifyGetSession, fastifySession } from '@ballast/session/fastify'
 *
 * const app = Fastify()
 * app.register(fastifySession(store))
 * app.get('/', async (request) => {
 *   const session = fastifyGetSession<{ views: number }>(request)
 *   session.data.views = (session.data.views ?? 0) + 1
 *   return { views: session.data.views }
 * })
 * ```
 */
export function fastifySession<T extends object>(
  store: SessionStore<T>,
  options: FastifySessionOptions = {},
): FastifyPluginCallback {
  const { onUnavailable } = adapterOptions(DEFAULT_FASTIFY_SESSION_OPTIONS, options)
  const unavailable = (
    error: SessionUnavailableError,
    request: FastifyRequest,
    reply: FastifyReply,
  ): unknown => {
    reply.code(503).header('retry-after', '1').header('cache-control', 'no-store')
    if (onUnavailable !== undefined) return onUnavailable(error, request, reply)
    reply.type('application/json; charset=utf-8')
    return BODY
  }
  const plugin: FastifyPluginCallback = (fastify, _opts, done) => {
    // A string-typed name: another plugin's type augmentation of `session` must not clash.
    fastify.decorateRequest('session' as string, null)
    fastify.addHook('onRequest', async (request, reply) => {
      try {
        const target = request as unknown as { session?: unknown }
        target.session = await store.loadRequest({
          cookie: request.headers.cookie,
          authorization: request.headers.authorization,
          ip: request.ip,
        })
      } catch (error) {
        if (!isUnavailable(error)) throw error
        return reply.send(unavailable(error, request, reply))
      }
    })
    fastify.addHook('onSend', async (request, reply, payload) => {
      const session = (request as unknown as { session?: RequestSession<T> | null }).session
      if (session === null || session === undefined) return payload
      let cookie: string | undefined
      try {
        cookie = await session.commit()
      } catch (error) {
        if (!isUnavailable(error)) throw error
        return unavailable(error, request, reply)
      }
      if (cookie !== undefined) {
        reply.header('set-cookie', cookie)
        reply.header('cache-control', 'no-store')
      }
      return payload
    })
    done()
  }
  // What fastify-plugin does: no encapsulation, so the hooks reach the caller's routes.
  ;(plugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true
  ;(plugin as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] =
    '@ballast/session'
  return plugin
}

/**
 * The session {@link fastifySession} attached to `request`, typed as `T` (the data type of the
 * store you registered). Throws if the plugin is not registered for this route.
 */
export function fastifyGetSession<T extends object = SessionData>(
  request: FastifyRequest,
): RequestSession<T> {
  const session = (request as unknown as { session?: unknown }).session
  if (session === undefined || session === null) {
    throw new TypeError('no session on this request: register fastifySession(store) first')
  }
  return session as RequestSession<T>
}
