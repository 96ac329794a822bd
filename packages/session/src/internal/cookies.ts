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
 * The value of cookie `name` in a `Cookie` header, or `undefined`. Scans for the one name
 * instead of parsing every cookie; the first occurrence wins, as in browsers' ordering.
 */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined || header.length === 0) return undefined
  let from = 0
  while (from < header.length) {
    const at = header.indexOf(name, from)
    if (at === -1) return undefined
    const before = at === 0 ? 32 : header.charCodeAt(at - 1)
    const eq = at + name.length
    if ((before === 32 || before === 59 || before === 9) && header.charCodeAt(eq) === 61) {
      // Only when the name is at the start of a pair and followed by '='.
      let end = header.indexOf(';', eq + 1)
      if (end === -1) end = header.length
      let value = header.slice(eq + 1, end).trim()
      if (
        value.length >= 2 &&
        value.charCodeAt(0) === 34 &&
        value.charCodeAt(value.length - 1) === 34
      ) {
        value = value.slice(1, -1)
      }
      return value
    }
    from = at + 1
  }
  return undefined
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
