import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { InvalidArgumentError } from '../src/index.js'
import { canonicalJson, fingerprintOf } from '../src/internal/fingerprint.js'

/** Fixed seeds: a failing run replays. */
const SEED = 0x5ca1ab1e

/**
 * The canonical form as first shipped (recursive). Stored records carry fingerprints made
 * with it: the current one must give the same text, or retries across a deploy get 422.
 */
function shippedCanonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (value === undefined) return 'null'
    if (typeof value === 'bigint') return JSON.stringify(value.toString())
    return JSON.stringify(value) ?? 'null'
  }
  if (Array.isArray(value)) return `[${value.map(shippedCanonicalJson).join(',')}]`
  if (value instanceof Date) return JSON.stringify(value.toISOString())
  if (ArrayBuffer.isView(value))
    return JSON.stringify(
      Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64'),
    )
  const toJSON = (value as { toJSON?: () => unknown }).toJSON
  if (typeof toJSON === 'function') return shippedCanonicalJson(toJSON.call(value))
  const parts: string[] = []
  for (const k of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[k]
    if (v === undefined || typeof v === 'function') continue
    parts.push(`${JSON.stringify(k)}:${shippedCanonicalJson(v)}`)
  }
  return `{${parts.join(',')}}`
}

/** Request bodies as they arrive: JSON (any string, lone surrogates included, as JSON can escape them). */
const jsonBody = fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' })
/** A copy with every object's keys in reverse order: the same request, written differently. */
const reordered = (value: unknown): unknown =>
  JSON.parse(JSON.stringify(value), (_k, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).reverse())
      : v,
  )
/** What a body means once parsed: JSON's own view (so -0 is 0). */
const meaning = (value: unknown): unknown => JSON.parse(JSON.stringify(value))

describe('fingerprint', () => {
  it('is the same for the same request whatever the key order', () => {
    expect(fingerprintOf({ a: 1, b: { c: [1, 2], d: 'x' } })).toBe(
      fingerprintOf({ b: { d: 'x', c: [1, 2] }, a: 1 }),
    )
  })

  it('differs when any value differs', () => {
    expect(fingerprintOf({ amount: 100 })).not.toBe(fingerprintOf({ amount: 101 }))
    expect(fingerprintOf(['POST', '/pay'])).not.toBe(fingerprintOf(['POST', '/refund']))
  })

  it('hashes bytes and strings as they are', () => {
    expect(fingerprintOf(Buffer.from('abc'))).toBe(fingerprintOf('abc'))
  })

  it('property: canonical JSON parses back to the same value and ignores key order', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = canonicalJson(value)
        expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(value)))
        expect(canonicalJson(reordered(value))).toBe(text)
      }),
      { seed: SEED, numRuns: 200 },
    )
  })

  it('fuzz: deterministic, and equal for equal requests however they are written', () => {
    fc.assert(
      fc.property(fc.constantFrom('POST', 'PATCH'), fc.webPath(), jsonBody, (method, url, body) => {
        const once = fingerprintOf([method, url, body])
        expect(fingerprintOf([method, url, body])).toBe(once)
        expect(fingerprintOf([method, url, structuredClone(body)])).toBe(once)
        expect(fingerprintOf([method, url, reordered(body)])).toBe(once)
      }),
      { seed: SEED, numRuns: 200 },
    )
  })

  it('fuzz: distinct JSON bodies give distinct fingerprints, equal ones the same', () => {
    // Small values so that equal pairs come up too, not only distinct ones.
    const small = fc.jsonValue({ maxDepth: 2, stringUnit: 'binary' })
    fc.assert(
      fc.property(fc.webPath(), small, small, (url, a, b) => {
        const same = isDeepStrictEqual(meaning(a), meaning(b))
        expect(fingerprintOf(['POST', url, a]) === fingerprintOf(['POST', url, b])).toBe(same)
      }),
      { seed: SEED, numRuns: 500 },
    )
  })

  it('fuzz: distinct raw bodies (bytes) give distinct fingerprints', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 64 }), (a, b) => {
        const same = Buffer.from(a).equals(Buffer.from(b))
        expect(fingerprintOf(a) === fingerprintOf(b)).toBe(same)
        expect(fingerprintOf(['POST', '/x', a]) === fingerprintOf(['POST', '/x', b])).toBe(same)
      }),
      { seed: SEED, numRuns: 300 },
    )
  })

  it('fuzz: the canonical form is the one shipped, so stored fingerprints stay valid', () => {
    const value = fc.oneof(
      fc.jsonValue({ stringUnit: 'binary' }),
      fc.anything({
        withDate: true,
        withTypedArray: true,
        withBigInt: true,
        withNullPrototype: true,
        withSparseArray: true,
        withBoxedValues: true,
        withMap: true,
        withSet: true,
        withObjectString: true,
      }),
      // holes, which a caller's value may have (parsed JSON cannot)
      fc.sparseArray(fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.constant(undefined)), {
        maxLength: 6,
      }),
      // values that say how to be written, inside a container
      fc
        .array(fc.anything({ withSparseArray: true, withDate: true }), { maxLength: 3 })
        .map((items) => items.map((v) => ({ toJSON: () => v }))),
    )
    fc.assert(
      fc.property(value, (v) => {
        expect(canonicalJson(v)).toBe(shippedCanonicalJson(v))
      }),
      { seed: SEED, numRuns: 300 },
    )
  })

  it('writes the holes of a sparse array as the shipped form did (empty), not as null', () => {
    // biome-ignore lint/suspicious/noSparseArray: the holes are the point
    const holes = [, 1, , 2, ,]
    expect(canonicalJson(holes)).toBe('[,1,,2,]')
    expect(canonicalJson(holes)).toBe(shippedCanonicalJson(holes))
    expect(canonicalJson({ a: new Array(3) })).toBe('{"a":[,,]}')
    // an element that is there but undefined is null, as before
    expect(canonicalJson([undefined, 1])).toBe('[null,1]')
  })

  it('fingerprints a body nested deeper than the call stack (a 100 KB JSON body can be 50 000 deep)', () => {
    const depth = 50_000
    const deep = JSON.parse(`${'['.repeat(depth)}1${']'.repeat(depth)}`)
    const deeper = JSON.parse(`${'['.repeat(depth)}2${']'.repeat(depth)}`)
    const objects = JSON.parse(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`)
    expect(fingerprintOf(['POST', '/x', deep])).toMatch(/^[\w-]{43}$/)
    expect(fingerprintOf(['POST', '/x', deep])).toBe(fingerprintOf(['POST', '/x', deep]))
    expect(fingerprintOf(['POST', '/x', deep])).not.toBe(fingerprintOf(['POST', '/x', deeper]))
    expect(fingerprintOf(objects)).toMatch(/^[\w-]{43}$/)
  })

  it('refuses a cyclic value with a typed error instead of overflowing the stack', () => {
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic.self = cyclic
    const selfish = { toJSON: () => selfish }
    for (const value of [cyclic, [cyclic], selfish]) {
      expect(() => fingerprintOf(value)).toThrow(InvalidArgumentError)
    }
    const shared = { x: 1 }
    expect(canonicalJson([shared, shared])).toBe('[{"x":1},{"x":1}]') // shared, not cyclic
  })
})
