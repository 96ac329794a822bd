import { randomUUID } from 'node:crypto'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Endpoint } from '../../endpoint.js'
import { isLbError } from '../../errors.js'
import type { RequestFailedEvent } from '../../proxy.js'
import type { ParsedHost, RequestTarget } from '../requestTarget.js'
import {
  announcesBody,
  FAILURE_TEXT,
  failureBody,
  isWebSocketUpgrade,
  noRouteBody,
  type RouteRuntime,
  upstreamPath,
} from './context.js'
import { type ForwardSettings, refusedUpgradeHead, upgradeHeaders } from './forwardHeaders.js'

/** A 502/503/504 the proxy answered, as its `request-failed` event reports it, before the request id is added. */
export type UpgradeFailure = Omit<RequestFailedEvent, 'requestId'>

/** What an upgrade reads from and reports to the proxy. */
export interface UpgradeOwner {
  readonly counters: {
    badRequests: number
    noRoute: number
    unavailable: number
    badGateway: number
    upgrades: number
  }
  readonly settings: ForwardSettings & { readonly connectTimeoutMs: number }
  /** Tunnelled sockets, destroyed on close. */
  readonly upgraded: Set<Duplex>
  closing(): boolean
  /** @throws InvalidRequestError */
  parse(req: IncomingMessage): { host: ParsedHost | undefined; target: RequestTarget }
  match(host: ParsedHost | undefined, path: string): RouteRuntime | undefined
  failed(event: RequestFailedEvent): void
}

/**
 * Proxies an upgrade request: a WebSocket is tunnelled to an endpoint after its 101; a refusal
 * is relayed; any other protocol goes upstream as a plain request whose connection closes.
 */
export function proxyUpgrade(
  owner: UpgradeOwner,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): void {
  const counters = owner.counters
  const answer = (status: number, text: string, body: string, extra = '') => {
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-content-type-options: nosniff\r\n${extra}connection: close\r\n\r\n${body}`,
    )
  }
  let requestId: string | undefined
  const failure = (event: UpgradeFailure) => {
    requestId ??= randomUUID()
    owner.failed({ requestId, ...event })
    answer(
      event.status,
      FAILURE_TEXT[event.status],
      failureBody(event.status, requestId),
      `x-request-id: ${requestId}\r\n`,
    )
  }
  socket.on('error', () => socket.destroy())
  if (owner.closing()) {
    answer(503, 'Service Unavailable', '503 Service Unavailable: the proxy is shutting down\n')
    return
  }
  let host: ParsedHost | undefined
  let target: RequestTarget
  try {
    ;({ host, target } = owner.parse(req))
  } catch (error) {
    if (!isLbError(error)) throw error
    counters.badRequests++
    answer(400, 'Bad Request', `400 Bad Request: ${(error as Error).message}\n`)
    return
  }
  // A handshake has no body. Bytes after the request head (`head`, and what follows on the
  // socket) are the client's first frames: they go upstream only after its 101, since an
  // upstream that refuses the upgrade would read them as its next request (smuggling).
  if (announcesBody(req)) {
    counters.badRequests++
    answer(400, 'Bad Request', '400 Bad Request: an upgrade request with a body\n')
    return
  }
  const route = owner.match(host, target.path)
  if (route === undefined) {
    counters.noRoute++
    answer(404, 'Not Found', noRouteBody(host, target))
    return
  }
  let endpoint: Endpoint<string>
  try {
    endpoint = route.balancer.pick(route.key?.(req))
  } catch (error) {
    counters.unavailable++
    failure({
      status: 503,
      route: route.name,
      endpoint: undefined,
      reason: (error as Error).message,
      error,
      attempts: 0,
    })
    return
  }
  const origin = new URL(endpoint.value)
  // Only WebSocket is tunnelled. Any other protocol (h2c above all) would give the client a raw
  // connection on which it sends further requests to the upstream past the routes; such a
  // request goes upstream as a plain one, without Upgrade, and its connection closes after it.
  const headers = upgradeHeaders(req, owner.settings, isWebSocketUpgrade(req))
  if (headers === undefined) {
    counters.badRequests++
    answer(400, 'Bad Request', '400 Bad Request: more than one Host header\n')
    return
  }
  const startedAt = route.balancer.begin(endpoint)
  let ended = false
  const end = (ok: boolean) => {
    if (!ended) {
      ended = true
      route.balancer.end(endpoint, startedAt, ok)
    }
  }
  const upstream = httpRequest({
    // A connection of its own: a 101 takes it over, and after a refusal it closes rather
    // than idling in node's global agent beyond the proxy's close().
    agent: false,
    host: origin.hostname,
    port: origin.port || 80,
    method: req.method,
    path: upstreamPath(route, target),
    headers,
    timeout: owner.settings.connectTimeoutMs,
  })
  upstream.on('timeout', () =>
    upstream.destroy(
      Object.assign(new Error('upgrade timed out'), { code: 'UND_ERR_HEADERS_TIMEOUT' }),
    ),
  )
  let answered = false
  upstream.on('error', (error) => {
    end(false)
    if (answered) {
      // The refusal is already on its way: cut it so the client sees it is incomplete.
      socket.destroy()
      return
    }
    if (socket.writable) {
      counters.badGateway++
      failure({
        status: 502,
        route: route.name,
        endpoint: endpoint.id,
        reason: (error as { code?: string }).code ?? error.message,
        error,
        attempts: 1,
      })
    }
  })
  upstream.on('response', (res) => {
    answered = true
    end(res.statusCode !== undefined && res.statusCode < 500)
    // A refusal (no 101): node has already de-chunked the body, so relay it without the
    // hop-by-hop headers (Transfer-Encoding among them) and delimit it by closing the connection.
    socket.write(refusedUpgradeHead(res))
    res.on('error', () => socket.destroy())
    res.pipe(socket)
  })
  upstream.on('upgrade', (res, upstreamSocket, upstreamHead) => {
    end(true)
    upstream.setTimeout(0)
    counters.upgrades++
    let text = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`
    for (let i = 0; i < res.rawHeaders.length; i += 2)
      text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`
    socket.write(`${text}\r\n`)
    if (upstreamHead.length > 0) socket.write(upstreamHead)
    if (head.length > 0) upstreamSocket.write(head)
    owner.upgraded.add(socket)
    socket.once('close', () => {
      owner.upgraded.delete(socket)
      upstreamSocket.destroy()
    })
    upstreamSocket.once('close', () => socket.destroy())
    upstreamSocket.on('error', () => socket.destroy())
    upstreamSocket.pipe(socket)
    socket.pipe(upstreamSocket)
  })
  upstream.end()
}
