/**
 * Where a `next` parameter may send the browser: only to a path of this shop. `next` is
 * resolved as a browser resolves a `Location` header (WHATWG URL: backslashes are slashes, tabs
 * and newlines are dropped, `/./` and `/../` collapse) against a placeholder origin, and kept
 * only when it stays on that origin and its path cannot be read as another host.
 */
const HERE = new URL('http://shop.invalid')

/** `next` as a same-origin path (`/product/3?x=1`), or `fallback` when it leads anywhere else. */
export function sameOriginPath(next: string | null | undefined, fallback = '/'): string {
  if (typeof next !== 'string' || next === '') return fallback
  let url: URL
  try {
    url = new URL(next, HERE)
  } catch {
    return fallback
  }
  if (url.origin !== HERE.origin) return fallback
  const path = `${url.pathname}${url.search}${url.hash}`
  // `//host` (e.g. from `/.//host`) is a network-path reference: another origin to a browser.
  if (!path.startsWith('/') || path.startsWith('//') || path.startsWith('/\\')) return fallback
  return path
}
