import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import { connectionTokens } from '../requestTarget.js'
import { HOP_BY_HOP } from '../upstreams.js'

/** The proxy options that decide which headers go upstream. */
export interface ForwardSettings {
  readonly preserveHost: boolean
  readonly xForwarded: boolean
  readonly trustForwarded: boolean
}

function forwardedProto(req: IncomingMessage): 'https' | 'http' {
  return (req.socket as Socket & { encrypted?: boolean }).encrypted ? 'https' : 'http'
}

/**
 * The headers of a request to send upstream, as a flat name/value list, or `undefined` when the
 * request has more than one `Host` (node keeps the first; an upstream may read the second).
 * Drops hop-by-hop headers, those `Connection` lists and `Expect`; sets `X-Forwarded-*`.
 */
export function upstreamHeaders(
  req: IncomingMessage,
  settings: ForwardSettings,
): string[] | undefined {
  const raw = req.rawHeaders
  const out: string[] = []
  const listed = connectionTokens(req.headers.connection)
  let hosts = 0
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || lower === 'expect' || listed?.has(lower)) continue
    // node keeps the first of two Host headers; an upstream may read the second.
    if (lower === 'host' && ++hosts > 1) return undefined
    if (lower === 'host' && !settings.preserveHost) continue
    if (settings.xForwarded && lower.startsWith('x-forwarded-')) {
      if (lower === 'x-forwarded-for') continue
      if (!settings.trustForwarded) continue
    }
    out.push(name, raw[i + 1]!)
  }
  if (settings.xForwarded) {
    const ip = req.socket.remoteAddress ?? ''
    const prior = req.headers['x-forwarded-for']
    out.push('x-forwarded-for', prior === undefined ? ip : `${prior}, ${ip}`)
    if (!settings.trustForwarded || req.headers['x-forwarded-proto'] === undefined) {
      out.push('x-forwarded-proto', forwardedProto(req))
    }
    if (!settings.trustForwarded || req.headers['x-forwarded-host'] === undefined) {
      if (req.headers.host !== undefined) out.push('x-forwarded-host', req.headers.host)
    }
  }
  return out
}

/**
 * The headers of an upgrade request to send upstream, or `undefined` when it has more than one
 * `Host`. `Connection: Upgrade` and `Upgrade` are kept only for WebSocket.
 */
export function upgradeHeaders(
  req: IncomingMessage,
  settings: ForwardSettings,
  websocket: boolean,
): Record<string, string | string[]> | undefined {
  const headers: Record<string, string | string[]> = {}
  if (websocket) {
    headers.connection = 'Upgrade'
    headers.upgrade = req.headers.upgrade!
  }
  const listed = connectionTokens(req.headers.connection)
  let hosts = 0
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase()
    if (name === 'host' && ++hosts > 1) return undefined
    if (HOP_BY_HOP.has(name) || listed?.has(name) || name === 'content-length') continue
    if (name === 'host' && !settings.preserveHost) continue
    if (name.startsWith('x-forwarded-') && !settings.trustForwarded) continue
    const prev = headers[name]
    const value = req.rawHeaders[i + 1]!
    headers[name] =
      prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value]
  }
  if (settings.xForwarded) {
    const ip = req.socket.remoteAddress ?? ''
    const prior = req.headers['x-forwarded-for']
    headers['x-forwarded-for'] = prior === undefined ? ip : `${prior}, ${ip}`
    headers['x-forwarded-proto'] ??= forwardedProto(req)
    if (req.headers.host !== undefined) headers['x-forwarded-host'] ??= req.headers.host
  }
  return headers
}

/** The upstream's response headers to send to the client: without hop-by-hop ones. */
export function downstreamHeaders(
  headers: Record<string, string | string[] | undefined>,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  const listed = connectionTokens(headers.connection)
  for (const name in headers) {
    if (HOP_BY_HOP.has(name)) continue
    if (listed?.has(name)) continue
    out[name] = headers[name]
  }
  return out
}

/** A refused upgrade's status line and headers (no hop-by-hop), closing the connection. */
export function refusedUpgradeHead(res: IncomingMessage): string {
  const listed = connectionTokens(res.headers.connection)
  let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\n`
  for (let i = 0; i < res.rawHeaders.length; i += 2) {
    const name = res.rawHeaders[i]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || listed?.has(lower)) continue
    text += `${name}: ${res.rawHeaders[i + 1]}\r\n`
  }
  return `${text}connection: close\r\n\r\n`
}
