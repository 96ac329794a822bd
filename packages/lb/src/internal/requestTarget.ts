import { isIPv6 } from 'node:net'
import { InvalidRequestError } from '../errors.js'

/**
 * The proxy's strict parsers for the bytes a client chooses: the `Host` header, the request
 * target and `Connection` tokens. Pure functions, fuzzed in test/requestTarget.test.ts; each
 * either returns a normalised value or throws {@link InvalidRequestError} (the proxy answers 400).
 */

/** A `Host` header taken apart and normalised. */
export interface ParsedHost {
  /** The host name in lower case, without a trailing dot; an IPv6 literal keeps its brackets. */
  readonly name: string
  /** `name` or `name:port` (the port without leading zeros): the host part of a cache key. */
  readonly authority: string
}

/** A request target reduced to what routing and the upstream see. */
export interface RequestTarget {
  /** The path, starting with `/`: dot segments resolved, `//` merged, unreserved characters decoded. */
  path: string
  /** The query after `?`, as sent; `undefined` when there is no `?`. */
  query: string | undefined
}

// reg-name labels (letters, digits, '-', '_', '~'), an optional trailing dot, or an IP literal in
// brackets, then an optional port of 1 to 5 digits. Nothing else: no '/', '@', '%', spaces.
const HOST = /^(?:([a-z0-9_~-]+(?:\.[a-z0-9_~-]+)*)\.?|\[([0-9a-f:.]+)\])(?::([0-9]{1,5}))?$/i

/**
 * Parses a `Host` header (or the authority of an absolute-form target).
 * @throws InvalidRequestError when it is not `host[:port]`.
 */
export function parseHost(raw: string): ParsedHost {
  // Nearly every request of a connection, and most connections, name the same host: one
  // remembered answer saves the regular expression (about 200 ns) on the hot path.
  if (raw === lastHost.raw) return lastHost.parsed
  const parsed = parseHostUncached(raw)
  lastHost = { raw, parsed }
  return parsed
}

let lastHost: { raw: string; parsed: ParsedHost } = {
  raw: 'localhost',
  parsed: { name: 'localhost', authority: 'localhost' },
}

function parseHostUncached(raw: string): ParsedHost {
  const m = raw.length <= 261 ? HOST.exec(raw) : null
  if (m === null || (m[2] !== undefined && !isIPv6(m[2]))) {
    throw new InvalidRequestError('host', 'invalid Host header: expected host[:port]')
  }
  const name = m[1] === undefined ? `[${m[2]!.toLowerCase()}]` : m[1].toLowerCase()
  if (m[3] === undefined) return { name, authority: name }
  const port = Number(m[3])
  if (port > 65_535) {
    throw new InvalidRequestError('host', 'invalid Host header: port out of range')
  }
  return { name, authority: `${name}:${port}` }
}

// Characters allowed as they are in a path segment (RFC 3986 pchar without '%'): unreserved,
// sub-delims, ':' and '@'. Anything else ('\', '#', '"', '<', '{', '|', controls, non-ASCII)
// is refused rather than guessed at, since upstreams disagree on what they mean.
const PCHAR = new Uint8Array(128)
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
  PCHAR[c.charCodeAt(0)] = 1
const UNRESERVED = new Uint8Array(128)
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~')
  UNRESERVED[c.charCodeAt(0)] = 1

const SLASH = 47
const DOT = 46
const PERCENT = 37

function refuse(why: string): never {
  throw new InvalidRequestError('target', `invalid request target: ${why}`)
}

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48
  const lower = code | 32
  if (lower >= 97 && lower <= 102) return lower - 87
  return -1
}

/**
 * Normalises a path as RFC 3986 §6.2.2 does, so the proxy routes on what an upstream will
 * resolve: percent-encoded unreserved characters are decoded (`%2e` is a dot, `%5f` an
 * underscore), other percent-encodings are kept with upper-case hex, `.` and `..` segments are
 * resolved and `//` is merged into `/`, as nginx does.
 * @throws InvalidRequestError for a path that does not start with `/`, has a character outside
 * RFC 3986's `pchar`, an invalid or control percent-encoding, an encoded `/` or `\`, a `..` that
 * leaves the root, or a `.`/`..` segment with `;` parameters (which some servers resolve).
 */
export function normalizePath(path: string): string {
  if (path.charCodeAt(0) !== SLASH) refuse('the path must start with "/"')
  // Fast path: nothing to decode, no dot segment, no '//': the path is already normal.
  let simple = true
  let previous = SLASH
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c === SLASH) {
      if (previous === SLASH) simple = false
    } else if (c === PERCENT) simple = false
    else if (c === DOT) {
      if (previous === SLASH) simple = false
    } else if (c >= 128 || PCHAR[c] === 0) refuse('a character that must be percent-encoded')
    previous = c
  }
  if (simple) return path
  const segments = path.split('/')
  const out: string[] = []
  let trailingSlash = false
  for (let i = 1; i < segments.length; i++) {
    const segment = decodeSegment(segments[i]!)
    const last = i === segments.length - 1
    trailingSlash = false
    if (segment === '' || segment === '.') {
      trailingSlash = last
      continue
    }
    if (segment === '..') {
      if (out.length === 0) refuse('".." leaves the root')
      out.pop()
      trailingSlash = last
      continue
    }
    const semicolon = segment.indexOf(';')
    if (semicolon !== -1) {
      const bare = segment.slice(0, semicolon)
      if (bare === '.' || bare === '..') refuse('a dot segment with parameters')
    }
    out.push(segment)
  }
  if (out.length === 0) return '/'
  return `/${out.join('/')}${trailingSlash ? '/' : ''}`
}

function decodeSegment(segment: string): string {
  if (segment.indexOf('%') === -1) return segment
  let out = ''
  for (let i = 0; i < segment.length; i++) {
    const c = segment.charCodeAt(i)
    if (c !== PERCENT) {
      out += segment[i]
      continue
    }
    const high = hexValue(segment.charCodeAt(i + 1))
    const low = hexValue(segment.charCodeAt(i + 2))
    if (high < 0 || low < 0) refuse('an invalid percent-encoding')
    const byte = high * 16 + low
    if (byte === SLASH || byte === 92) refuse('an encoded "/" or "\\"')
    if (byte < 32 || byte === 127) refuse('an encoded control character')
    out += byte < 128 && UNRESERVED[byte] === 1 ? String.fromCharCode(byte) : `%${HEX[byte]}`
    i += 2
  }
  return out
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).toUpperCase().padStart(2, '0'))

/**
 * Parses a request target: origin form (`/path?query`), or absolute form
 * (`http://host/path?query`) when its authority is the request's own `Host`, as a request
 * meant for this proxy is. The path is normalised with {@link normalizePath}; the query is
 * kept as sent.
 * @param host the request's parsed `Host` header, if it had one.
 * @throws InvalidRequestError for any other form (`*`, authority form, another host), a
 * fragment, a character in the query outside visible ASCII, or a path `normalizePath` refuses.
 */
export function parseRequestTarget(url: string, host: ParsedHost | undefined): RequestTarget {
  let start = 0
  if (url.charCodeAt(0) !== SLASH) {
    const scheme = /^https?:\/\//i.exec(url)
    if (scheme === null) refuse('expected origin form (/path) or absolute form (http://host/path)')
    const from = scheme[0].length
    let end = from
    while (end < url.length) {
      const c = url.charCodeAt(end)
      if (c === SLASH || c === 63) break
      end++
    }
    let authority: ParsedHost
    try {
      authority = parseHost(url.slice(from, end))
    } catch {
      refuse('absolute form with an invalid authority')
    }
    if (host === undefined || authority.authority !== host.authority) {
      refuse('absolute form for another host than the Host header names')
    }
    start = end
  }
  const question = url.indexOf('?', start)
  const rawPath = url.slice(start, question === -1 ? url.length : question)
  let query: string | undefined
  if (question !== -1) {
    query = url.slice(question + 1)
    for (let i = 0; i < query.length; i++) {
      const c = query.charCodeAt(i)
      if (c <= 32 || c >= 127 || c === 35) refuse('a character in the query that must be encoded')
    }
  }
  return { path: normalizePath(rawPath === '' ? '/' : rawPath), query }
}

/**
 * The lower-cased header names a `Connection` header lists (its comma-separated tokens), or
 * `undefined` when it lists none but `close`/`keep-alive`. A header is hop-by-hop when its exact
 * name is a token, never because its name contains one.
 */
export function connectionTokens(
  header: string | readonly string[] | undefined,
): Set<string> | undefined {
  if (header === undefined) return undefined
  const value = typeof header === 'string' ? header : header.join(',')
  if (value === 'keep-alive' || value === 'close' || value === '') return undefined
  const tokens = new Set<string>()
  for (const part of value.split(',')) {
    const token = part.trim().toLowerCase()
    if (token !== '' && token !== 'close' && token !== 'keep-alive') tokens.add(token)
  }
  return tokens.size === 0 ? undefined : tokens
}

/** What {@link matchRoute} reads of a route. */
export interface RouteMatcher {
  /** The lower-case host to match (`.example.com` for a wildcard), or none for any host. */
  host: string | undefined
  /** Whether `host` is a wildcard suffix. */
  wildcard: boolean
  /** A normalised path prefix without a trailing `/` (or `/` itself). */
  prefix: string
}

/** Orders routes most specific first: a host before none, an exact host before a wildcard, then the longest prefix. */
export function byPrecedence(a: RouteMatcher, b: RouteMatcher): number {
  return (
    Number(b.host !== undefined) - Number(a.host !== undefined) ||
    Number(a.wildcard) - Number(b.wildcard) ||
    b.prefix.length - a.prefix.length
  )
}

/**
 * The first route, in the order given (sort with {@link byPrecedence} first), whose host matches and whose prefix contains the path on
 * a segment boundary (`/api` matches `/api` and `/api/x`, not `/apix`).
 * @param path a path from {@link parseRequestTarget}: normalised, without the query.
 */
export function matchRoute<R extends RouteMatcher>(
  routes: readonly R[],
  hostName: string | undefined,
  path: string,
): R | undefined {
  for (const r of routes) {
    if (r.host !== undefined) {
      if (hostName === undefined) continue
      if (r.wildcard ? !hostName.endsWith(r.host) : hostName !== r.host) continue
    }
    const p = r.prefix
    if (p === '/') return r
    if (path.startsWith(p) && (path.length === p.length || path.charCodeAt(p.length) === SLASH))
      return r
  }
  return undefined
}
