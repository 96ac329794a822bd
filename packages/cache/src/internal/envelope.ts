/**
 * The L2 value layout: a header the Lua scripts can read without the serializer, then the
 * serialized payload.
 *
 *   <kind><token>|<freshUntil>|<staleUntil>|<refreshAt>|<tagsLength>|<tags JSON><payload>
 *
 * kind: `v` a value, `n` a negative entry ("the key does not exist"), `t` a tombstone left by
 * a delete so that a fill that started before it cannot write its old value back.
 * token: unique per write; a fill writes only if the token it saw is still there.
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
}

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

/** `undefined` for a string that is not an envelope (a foreign key in our namespace). */
export function decodeEnvelope(text: string): Envelope | undefined {
  const kind = text[0]
  if (kind !== 'v' && kind !== 'n' && kind !== 't') return undefined
  const a = text.indexOf('|')
  const b = text.indexOf('|', a + 1)
  const c = text.indexOf('|', b + 1)
  const d = text.indexOf('|', c + 1)
  const e = text.indexOf('|', d + 1)
  if (a < 0 || b < 0 || c < 0 || d < 0 || e < 0) return undefined
  const tagLength = numberAt(text, d + 1, e)
  const refresh = numberAt(text, c + 1, d)
  return {
    kind,
    token: text.slice(1, a),
    freshUntil: numberAt(text, a + 1, b),
    staleUntil: numberAt(text, b + 1, c),
    refreshAt: refresh === 0 ? Number.POSITIVE_INFINITY : refresh,
    tags:
      tagLength === 0 ? undefined : (JSON.parse(text.slice(e + 1, e + 1 + tagLength)) as string[]),
    payload: text.slice(e + 1 + tagLength),
  }
}

/** `Number(text.slice(from, to))` without the slice for the usual case, a run of digits. */
function numberAt(text: string, from: number, to: number): number {
  let n = 0
  for (let i = from; i < to; i++) {
    const digit = text.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return Number(text.slice(from, to))
    n = n * 10 + digit
  }
  return n
}

/** The token of a raw L2 value, as the Lua scripts read it. */
export function envelopeToken(text: string | null): string {
  if (text === null) return ''
  const a = text.indexOf('|')
  return a < 0 ? '?' : text.slice(0, a)
}
