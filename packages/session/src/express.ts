import type { NextFunction, Request, RequestHandler, Response } from 'express'
import type { SessionUnavailableError } from './errors.js'
import { adapterOptions } from './internal/adapterOptions.js'
import { answerUnavailable, bindResponse, isUnavailable } from './internal/nodeResponse.js'
import type { RequestSession } from './requestSession.js'
import type { SessionData, SessionStore } from './sessionStore.js'

/** Options of {@link expressSession}. */
export interface ExpressSessionOptions {
  /**
   * Answers a request whose session cannot be read or written because Redis is unreachable.
   * @default a 503 with a JSON body `{ error, code: 'E_SESSION_UNAVAILABLE' }` and `Retry-After: 1`
   */
  onUnavailable?:
    | ((error: SessionUnavailableError, req: Request, res: Response) => void)
    | undefined
}

/** Defaults of {@link ExpressSessionOptions}; an option given as `undefined` keeps its default. */
export const DEFAULT_EXPRESS_SESSION_OPTIONS: Readonly<ExpressSessionOptions> = Object.freeze({
  onUnavailable: undefined,
})

/**
 * Express middleware: sets `req.session` (read it typed with {@link expressGetSession}) and writes
 * changes before the response ends.
 * @example
 * ```ts
 * import express from 'express'
 * import { expressGetSession, expressSession } from '@ballast/session/express'
 *
 * const app = express()
 * app.use(expressSession(store))
 * app.get('/', (req, res) => {
 *   const session = expressGetSession<{ views: number }>(req)
 *   session.data.views = (session.data.views ?? 0) + 1
 *   res.send(`views: ${session.data.views}`)
 * })
 * ```
 */
export function expressSession<T extends object>(
  store: SessionStore<T>,
  options: ExpressSessionOptions = {},
): RequestHandler {
  const { onUnavailable } = adapterOptions(DEFAULT_EXPRESS_SESSION_OPTIONS, options)
  const nodeHandler =
    onUnavailable === undefined
      ? undefined
      : (error: SessionUnavailableError, req: unknown, res: unknown) =>
          onUnavailable(error, req as Request, res as Response)
  return (req: Request, res: Response, next: NextFunction) => {
    store
      .loadRequest({
        cookie: req.headers.cookie,
        authorization: req.headers.authorization,
        ip: req.socket.remoteAddress,
      })
      .then(
        (session) => {
          ;(req as { session?: unknown }).session = session
          bindResponse(session, req, res, nodeHandler)
          next()
        },
        (error: unknown) => {
          if (!isUnavailable(error)) next(error)
          else if (nodeHandler !== undefined) nodeHandler(error, req, res)
          else answerUnavailable(res)
        },
      )
  }
}

/**
 * The session {@link expressSession} attached to `req`, typed as `T` (the data type of the
 * store you mounted). Throws if the middleware is not mounted on this route.
 */
export function expressGetSession<T extends object = SessionData>(req: Request): RequestSession<T> {
  const session = (req as { session?: unknown }).session
  if (session === undefined || session === null) {
    throw new TypeError('no session on this request: mount expressSession(store) before this route')
  }
  return session as RequestSession<T>
}
