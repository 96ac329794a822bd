import type { IncomingMessage, ServerResponse } from 'node:http'
import { isSessionError, type SessionUnavailableError } from '../errors.js'
import type { RequestSession } from '../requestSession.js'

/** Called instead of the default `503` answer when Redis cannot be reached. */
export type NodeUnavailableHandler = (
  error: SessionUnavailableError,
  req: IncomingMessage,
  res: ServerResponse,
) => void

const BODY = JSON.stringify({
  error: 'session store unavailable, try again shortly',
  code: 'E_SESSION_UNAVAILABLE',
})

/** The default answer when the session store is unreachable: 503, JSON, `Retry-After: 1`. */
export function answerUnavailable(res: ServerResponse): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.statusCode = 503
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(BODY))
  res.setHeader('retry-after', '1')
  res.setHeader('cache-control', 'no-store')
  res.end(BODY)
}

export function isUnavailable(error: unknown): error is SessionUnavailableError {
  return isSessionError(error) && error.code === 'E_SESSION_UNAVAILABLE'
}

/** Adds the session cookie (and `Cache-Control: no-store`) to a response not yet sent. */
export function applyCookie(session: RequestSession<object>, res: ServerResponse): void {
  const cookie = session.setCookieHeader()
  if (cookie === undefined) return
  const prev = res.getHeader('set-cookie')
  res.setHeader(
    'set-cookie',
    prev === undefined ? cookie : Array.isArray(prev) ? [...prev, cookie] : [String(prev), cookie],
  )
  res.setHeader('cache-control', 'no-store')
}

/**
 * Hooks a Node response so the cookie goes out with the headers, and the session is written
 * before the last byte: `end()` waits for the write, and answers 503 instead when it fails.
 */
export function bindResponse(
  session: RequestSession<object>,
  req: IncomingMessage,
  res: ServerResponse,
  onUnavailable: NodeUnavailableHandler | undefined,
): void {
  const writeHead = res.writeHead
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    if (!this.headersSent) applyCookie(session, this)
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args)
  } as ServerResponse['writeHead']
  const end = res.end as (...a: unknown[]) => ServerResponse
  let ending = false
  res.end = function (this: ServerResponse, ...args: unknown[]) {
    if (ending) return end.apply(this, args)
    ending = true
    session.commit().then(
      () => end.apply(res, args),
      (error: unknown) => {
        if (res.headersSent) {
          end.apply(res, args)
          return
        }
        if (isUnavailable(error) && onUnavailable !== undefined) onUnavailable(error, req, res)
        else answerUnavailable(res)
      },
    )
    return this
  } as ServerResponse['end']
}
