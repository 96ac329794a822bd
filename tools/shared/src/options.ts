/**
 * Renders a value for an error message: strings quoted, functions as `a function`, bigints
 * with their `n`, objects as JSON where they can be, everything else as written.
 *
 * @example
 * ```ts
 * show('2s') // '"2s"'
 * show(-5) // '-5'
 * ```
 */
export function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'object' && value !== null) {
    try {
      return JSON.stringify(value)
    } catch {
      return Object.prototype.toString.call(value)
    }
  }
  return String(value)
}

/** An object literal (prototype `Object.prototype` or `null`): the only kind `merge` descends into. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/**
 * Merges options over defaults once, in a constructor: a field given as `undefined` keeps its
 * default. Where both the default and the option are plain objects (object literals), they are
 * merged the same way, field by field, so `{ cache: { maxBodyBytes: undefined } }` keeps the
 * nested default too. Anything else given (arrays, functions, class instances such as a
 * Redis client or an agent, `false`, `null`) replaces the default as it is. Returns a new
 * object; neither argument is changed. Options that are `undefined` or `null` give a copy of
 * the defaults.
 *
 * @throws TypeError when `options` is neither an object, `undefined` nor `null` (callers check
 *   the type first to throw their own `InvalidArgumentError`).
 * @example
 * ```ts
 * merge({ ttl: 1000, lock: { timeout: 50 } }, { ttl: undefined, lock: { timeout: undefined } })
 * // { ttl: 1000, lock: { timeout: 50 } }
 * ```
 */
export function merge<D extends object, O extends object>(
  defaults: D,
  options: O | undefined,
): D & O {
  const out = { ...defaults } as Record<string, unknown>
  if (options === undefined || options === null) return out as D & O
  if (typeof options !== 'object') {
    throw new TypeError(`invalid options: expected an object, got ${show(options)}`)
  }
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue
    const base = out[key]
    out[key] = isPlainObject(base) && isPlainObject(value) ? merge(base, value) : value
  }
  return out as D & O
}
