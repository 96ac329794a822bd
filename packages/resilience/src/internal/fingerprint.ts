import { createHash } from 'node:crypto'

/**
 * Canonical JSON: object keys sorted at every depth, so `{a:1,b:2}` and `{b:2,a:1}` hash the
 * same. Bytes (Buffer, Uint8Array) are hashed as they are; strings as UTF-8.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (value === undefined) return 'null'
    if (typeof value === 'bigint') return JSON.stringify(value.toString())
    return JSON.stringify(value) ?? 'null'
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value instanceof Date) return JSON.stringify(value.toISOString())
  if (ArrayBuffer.isView(value))
    return JSON.stringify(
      Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64'),
    )
  const toJSON = (value as { toJSON?: () => unknown }).toJSON
  if (typeof toJSON === 'function') return canonicalJson(toJSON.call(value))
  const keys = Object.keys(value).sort()
  const parts: string[] = []
  for (const k of keys) {
    const v = (value as Record<string, unknown>)[k]
    if (v === undefined || typeof v === 'function') continue
    parts.push(`${JSON.stringify(k)}:${canonicalJson(v)}`)
  }
  return `{${parts.join(',')}}`
}

/** SHA-256 (base64url) of the canonical form of `input`. */
export function fingerprintOf(input: unknown): string {
  const hash = createHash('sha256')
  if (typeof input === 'string') hash.update(input, 'utf8')
  else if (ArrayBuffer.isView(input))
    hash.update(new Uint8Array(input.buffer, input.byteOffset, input.byteLength))
  else hash.update(canonicalJson(input), 'utf8')
  return hash.digest('base64url')
}
