import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Balancer } from '../../balancer.js'
import type { Endpoint } from '../../endpoint.js'
import type { HashKey } from '../../hash.js'
import type { HealthChecker } from '../../healthChecker.js'
import type { RetryBudget } from '../../retryBudget.js'
import type { ParsedHost, RequestTarget } from '../requestTarget.js'
import type { Attempt, AttemptOwner } from './attempt.js'
import type { ServedRequest } from './telemetry.js'

/** A route of the proxy as it runs: its matcher, its balancer and what the proxy created for it. */
export interface RouteRuntime {
  name: string
  host: string | undefined
  wildcard: boolean
  prefix: string
  stripPrefix: boolean
  balancer: Balancer<string>
  /** The proxy created the balancer (from a list of origins) and closes it. */
  own: boolean
  checker: HealthChecker<string> | undefined
  budget: RetryBudget | undefined
  key: ((req: IncomingMessage) => HashKey | undefined) | undefined
}

/** One client request on its way through the proxy, across its attempts. */
export interface RequestContext {
  proxy: AttemptOwner
  req: IncomingMessage
  res: ServerResponse
  route: RouteRuntime
  method: string
  /** The path and query sent upstream. */
  path: string
  /** The headers sent upstream, as a flat name/value list. */
  headers: string[]
  hasBody: boolean
  idempotent: boolean
  key: HashKey | undefined
  tried: Endpoint<string>[]
  attempt: Attempt | undefined
  aborted: boolean
  cacheKey: string | undefined
  acceptEncoding: string | undefined
  /** The `x-request-id` sent upstream: the client's when sane, else a new UUID. */
  requestId: string | undefined
  /** The request's `ballast:lb:proxy:request` message, when it was published. */
  served: ServedRequest | undefined
}

export const FAILURE_TEXT = {
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/** The body of a 502/503/504 answer: the status and the request id, nothing about the inside. */
export function failureBody(status: 502 | 503 | 504, requestId: string): string {
  return `${status} ${FAILURE_TEXT[status]}\nrequest id: ${requestId}\n`
}

/**
 * The body of a 404: the host name and path as the proxy parsed them (validated, so they carry
 * no markup), never the query or raw target, which a client could fill with text to reflect.
 */
export function noRouteBody(host: ParsedHost | undefined, target: RequestTarget): string {
  return `404 Not Found: no route for host ${JSON.stringify(host?.name ?? '')} and path ${JSON.stringify(target.path)}\n`
}

/** The path and query sent upstream: the normalised path, without the prefix when it is stripped. */
export function upstreamPath(route: RouteRuntime, target: RequestTarget): string {
  let path = target.path
  if (route.stripPrefix && route.prefix !== '/') {
    path = path.slice(route.prefix.length)
    if (path === '') path = '/'
  }
  return target.query === undefined ? path : `${path}?${target.query}`
}

/** Whether a request asks for a WebSocket, the one protocol the proxy tunnels. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.headers.upgrade?.trim().toLowerCase() === 'websocket'
}

/** Whether a request announces a body (a non-zero `Content-Length` or any `Transfer-Encoding`). */
export function announcesBody(req: IncomingMessage): boolean {
  const contentLength = req.headers['content-length']
  return (
    (contentLength !== undefined && contentLength !== '0') ||
    req.headers['transfer-encoding'] !== undefined
  )
}
