import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { canonicalJson, fingerprintOf } from '../src/internal/fingerprint.js'

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
        const shuffled = JSON.parse(JSON.stringify(value), (_k, v) =>
          v && typeof v === 'object' && !Array.isArray(v)
            ? Object.fromEntries(Object.entries(v).reverse())
            : v,
        )
        expect(canonicalJson(shuffled)).toBe(text)
      }),
    )
  })
})
