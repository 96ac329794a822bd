/**
 * The L2 value layout: a header the Lua scripts can read without the serializer, then the
 * serialized payload.
 *
 *   <kind><token>|<freshUntil>|<staleUntil>|<refreshAt>|<tagsLength>|<tags JSON><payload>
 *
 * kind: `v` a value, `n` a negative entry ("the key does not exist"), `t` a tombstone left by
 * a delete so that a fill that started before it cannot write its old value back.
 * token: unique per write; a fill writes only if the token it saw is still there. The token of a
 * value ends with `~<serializer name>` (versions before it wrote none): a reader with another
 * serializer treats the value as undecodable instead of misreading it.
 *
 * Anything can be stored at our keys (a foreign client, an older or newer version, someone with
 * Redis access), so {@link decodeEnvelope} checks every field and never throws.
 */
export type EnvelopeKind = 'v' | 'n' | 't'

export interface Envelope {
  kind: EnvelopeKind
  token: string
  freshUntil: number
  staleUntil: number
  refreshAt: number
  tags: string[] | undefined
  payload: string
  /** The serializer named in the token, or `undefined` for a value written before tokens named it. */
  serializer: string | undefined
  /** The deserialized payload of a `v` entry, set by the cache once it decoded it. */
  value?: unknown
}

/** The separator of the serializer name at the end of a value's token. */
export const SERIALIZER_MARK = '~'

export function encodeEnvelope(
  kind: EnvelopeKind,
  token: string,
  freshUntil: number,
  staleUntil: number,
  refreshAt: number,
  tags: readonly string[] | undefined,
  payload: string,
): string {
  const tagText = tags === undefined || tags.length === 0 ? '' : JSON.stringify(tags)
  const refresh = Number.isFinite(refreshAt) ? refreshAt : 0
  return `${kind}${token}|${freshUntil}|${staleUntil}|${refresh}|${tagText.length}|${tagText}${payload}`
}

/** The envelope, or `undefined` for a string that is not a well-formed one (a foreign value, bad fields). */
export function decodeEnvelope(text: string): Envelope | undefined {
  const kind = text[0]
  if (kind !== 'v' && kind !== 'n' && kind !== 't') return undefined
  const a = text.indexOf('|')
  const b = text.indexOf('|', a + 1)
  const c = text.indexOf('|', b + 1)
  const d = text.indexOf('|', c + 1)
  const e = text.indexOf('|', d + 1)
  if (a < 0 || b < 0 || c < 0 || d < 0 || e < 0) return undefined
  const freshUntil = numberAt(text, a + 1, b)
  const staleUntil = numberAt(text, b + 1, c)
  const refresh = numberAt(text, c + 1, d)
  const tagLength = numberAt(text, d + 1, e)
  if (
    Number.isNaN(freshUntil) ||
    Number.isNaN(staleUntil) ||
    Number.isNaN(refresh) ||
    !Number.isSafeInteger(tagLength) ||
    e + 1 + tagLength > text.length
  ) {
    return undefined
  }
  let tags: string[] | undefined
  if (tagLength > 0) {
    tags = parseTags(text.slice(e + 1, e + 1 + tagLength))
    if (tags === undefined) return undefined
  }
  const token = text.slice(1, a)
  const mark = kind === 'v' ? token.lastIndexOf(SERIALIZER_MARK) : -1
  return {
    kind,
    token,
    freshUntil,
    staleUntil,
    refreshAt: refresh === 0 ? Number.POSITIVE_INFINITY : refresh,
    tags,
    payload: text.slice(e + 1 + tagLength),
    serializer: mark < 0 ? undefined : token.slice(mark + 1),
  }
}

function parseTags(text: string): string[] | undefined {
  let tags: unknown
  try {
    tags = JSON.parse(text)
  } catch {
    return undefined
  }
  if (!Array.isArray(tags)) return undefined
  for (const tag of tags) if (typeof tag !== 'string') return undefined
  return tags as string[]
}

/**
 * `Number(text.slice(from, to))` without the slice for the usual case, a run of digits; `NaN`
 * for an empty field or anything but a finite non-negative number.
 */
function numberAt(text: string, from: number, to: number): number {
  if (from >= to) return Number.NaN
  let n = 0
  for (let i = from; i < to; i++) {
    const digit = text.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) {
      const parsed = Number(text.slice(from, to))
      return Number.isFinite(parsed) && parsed >= 0 ? parsed : Number.NaN
    }
    n = n * 10 + digit
  }
  return Number.isFinite(n) ? n : Number.NaN
}

/**
 * The token of a raw L2 value exactly as the compare-and-set script reads it (everything
 * before the first `|`, the whole value when there is none), so that a fill can replace a
 * value that is not an envelope.
 */
export function envelopeToken(text: string | null): string {
  if (text === null) return ''
  const a = text.indexOf('|')
  return a < 0 ? text : text.slice(0, a)
}
