import { type ParseOptions, parseCookie } from 'cookie'

/** Resolved attributes of the session cookie. */
export interface CookieSpec {
  name: string
  domain: string | undefined
  path: string
  secure: boolean
  httpOnly: boolean
  sameSite: 'lax' | 'strict' | 'none'
  persistent: boolean
}

/**
 * The value of cookie `name` in a `Cookie` header, or `undefined`. The header is parsed as
 * RFC 6265 says, by the `cookie` package (what Express and Fastify use): pairs split on `;`,
 * the name before the first `=`, space and tab trimmed. A name that appears only inside
 * another cookie's value (`x=a __Host-sid=evil`) is never read.
 *
 * When the name appears twice the first pair wins: browsers send the cookie with the longer
 * path first and, for equal paths, the one created earlier, so the first is the most
 * specific one the browser holds.
 */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header.length === 0) return undefined
  return parseCookie(header, RAW)[name]
}

// Session values are base64url and a dot: never percent-encoded, so they are read as sent
// (one spelling per value), only unquoted as RFC 6265 allows (`name="value"`).
const RAW: ParseOptions = {
  decode: (value) =>
    value.length >= 2 && value.charCodeAt(0) === 34 && value.charCodeAt(value.length - 1) === 34
      ? value.slice(1, -1)
      : value,
}

/** A `Set-Cookie` value for `value`, or one that expires the cookie when `value` is `undefined`. */
export function serializeCookie(
  spec: CookieSpec,
  value: string | undefined,
  maxAgeMs?: number,
): string {
  let out = `${spec.name}=${value ?? ''}; Path=${spec.path}`
  if (spec.domain !== undefined) out += `; Domain=${spec.domain}`
  if (value === undefined) out += '; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT'
  else if (spec.persistent && maxAgeMs !== undefined) {
    out += `; Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}`
  }
  if (spec.httpOnly) out += '; HttpOnly'
  if (spec.secure) out += '; Secure'
  out +=
    spec.sameSite === 'lax'
      ? '; SameSite=Lax'
      : spec.sameSite === 'strict'
        ? '; SameSite=Strict'
        : '; SameSite=None'
  return out
}
