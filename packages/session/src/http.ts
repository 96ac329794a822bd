import type { IncomingMessage, ServerResponse } from 'node:http'
import { adapterOptions } from './internal/adapterOptions.js'
import {
  answerUnavailable,
  bindResponse,
  isUnavailable,
  type NodeUnavailableHandler,
} from './internal/nodeResponse.js'
import type { RequestSession } from './requestSession.js'
import type { SessionData, SessionStore } from './sessionStore.js'

export type { NodeUnavailableHandler } from './internal/nodeResponse.js'

/** Options of {@link httpSession} and {@link httpAttachSession}. */
export interface HttpSessionOptions {
  /**
   * Answers a request whose session cannot be read or written because Redis is unreachable.
   * @default a 503 with a JSON body `{ error, code: 'E_SESSION_UNAVAILABLE' }` and `Retry-After: 1`
   */
  onUnavailable?: NodeUnavailableHandler | undefined
}

/** Defaults of {@link HttpSessionOptions}; an option given as `undefined` keeps its default. */
export const DEFAULT_HTTP_SESSION_OPTIONS: Readonly<HttpSessionOptions> = Object.freeze({
  onUnavailable: undefined,
})

/** A node:http handler that receives the request's session as its third argument. */
export type SessionRequestHandler<T extends object = SessionData> = (
  req: IncomingMessage,
  res: ServerResponse,
  session: RequestSession<T>,
) => void | Promise<void>

/**
 * Load the session of a plain `node:http` request and hook the response so changes are
 * written before it ends. Returns `undefined` when Redis is unreachable (the response has
 * then been answered with a 503, or by `onUnavailable`).
 * @example
 * ```ts
 * createServer(async (req, res) => {
 *   const session = await httpAttachSession(store, req, res)
 *   if (session === undefined) return
 *   res.end(String(session.userId))
 * })
 * ```
 */
export async function httpAttachSession<T extends object>(
  store: SessionStore<T>,
  req: IncomingMessage,
  res: ServerResponse,
  options: HttpSessionOptions = {},
): Promise<RequestSession<T> | undefined> {
  const { onUnavailable } = adapterOptions(DEFAULT_HTTP_SESSION_OPTIONS, options)
  let session: RequestSession<T>
  try {
    session = await store.loadRequest({
      cookie: req.headers.cookie,
      authorization: req.headers.authorization,
      ip: req.socket.remoteAddress,
    })
  } catch (error) {
    if (isUnavailable(error) && onUnavailable !== undefined) onUnavailable(error, req, res)
    else answerUnavailable(res)
    return undefined
  }
  bindResponse(session, req, res, onUnavailable)
  return session
}

/**
 * Wrap a `node:http` handler with sessions: the same semantics as the Express and Fastify
 * middleware. A handler that throws gets a 500 if nothing was sent yet.
 * @example
 * ```ts
 * import { createServer } from 'node:http'
 * import { httpSession } from '@ballast/session/http'
 *
 * // store: a SessionStore<{ views: number }>
 * createServer(
 *   httpSession(store, async (req, res, session) => {
 *     session.data.views = (session.data.views ?? 0) + 1
 *     res.end(`views: ${session.data.views}`)
 *   }),
 * ).listen(3000)
 * ```
 */
export function httpSession<T extends object>(
  store: SessionStore<T>,
  handler: SessionRequestHandler<T>,
  options: HttpSessionOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const resolved = adapterOptions(DEFAULT_HTTP_SESSION_OPTIONS, options)
  return (req, res) => {
    httpAttachSession(store, req, res, resolved).then(async (session) => {
      if (session === undefined) return
      try {
        await handler(req, res, session)
      } catch {
        if (!res.headersSent) {
          res.statusCode = 500
          res.end('internal error')
        } else res.destroy()
      }
    })
  }
}
