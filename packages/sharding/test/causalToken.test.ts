import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CausalToken, InvalidArgumentError, InvalidCausalTokenError } from '../src/index.js'

const gtid = fc
  .tuple(
    fc.integer({ min: 0, max: 3 }),
    fc.integer({ min: 1, max: 9 }),
    fc.bigInt({ min: 1n, max: 10n ** 12n }),
  )
  .map(([d, s, n]) => `${d}-${s}-${n}`)
const shardId = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/)

describe('CausalToken', () => {
  it('round-trips through its cookie-safe string', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(shardId, gtid), { maxLength: 6 }), (entries) => {
        let token = CausalToken.empty
        for (const [shard, g] of entries) token = token.merge(CausalToken.of(shard, g))
        const text = token.toString()
        expect(text).toMatch(/^[A-Za-z0-9_.:+-]*$/)
        const back = CausalToken.parse(text)
        expect(back.toString()).toBe(text)
        expect(back.covers(token)).toBe(true)
        expect(token.covers(back)).toBe(true)
      }),
      { seed: 16, numRuns: 100 },
    )
  })

  it('keeps the later position per shard and domain when merging', () => {
    const a = CausalToken.of('s1', '0-1-10,1-2-5')
    const b = CausalToken.of('s1', '0-1-7,1-2-9').merge(CausalToken.of('s2', '0-3-1'))
    const m = a.merge(b)
    expect(m.positionFor('s1')).toBe('0-1-10,1-2-9')
    expect(m.positionFor('s2')).toBe('0-3-1')
    expect(m.covers(a)).toBe(true)
    expect(m.covers(b)).toBe(true)
    expect(a.covers(m)).toBe(false)
  })

  it('merges commutatively and idempotently', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(shardId, gtid), { maxLength: 5 }),
        fc.array(fc.tuple(shardId, gtid), { maxLength: 5 }),
        (xs, ys) => {
          const build = (es: [string, string][]) =>
            es.reduce((t, [s, g]) => t.merge(CausalToken.of(s, g)), CausalToken.empty)
          const x = build(xs)
          const y = build(ys)
          expect(x.merge(y).toString()).toBe(y.merge(x).toString())
          expect(x.merge(x).toString()).toBe(x.toString())
        },
      ),
      { seed: 17, numRuns: 100 },
    )
  })

  it('tells whether a server position has applied it', () => {
    const t = CausalToken.of('s1', '0-1-42')
    expect(t.isCoveredBy('s1', '0-1-42')).toBe(true)
    expect(t.isCoveredBy('s1', '0-1-41')).toBe(false)
    expect(t.isCoveredBy('s1', '0-2-100,1-1-1')).toBe(true)
    expect(t.isCoveredBy('s1', '1-1-100')).toBe(false)
    expect(t.isCoveredBy('other', '')).toBe(true)
  })

  it('rejects anything that is not a token, so cookie text never reaches SQL unchecked', () => {
    for (const text of [
      "s1:0-1-1'; DROP TABLE users; --",
      's1:0-1-x',
      ':0-1-1',
      'a b:0-1-1',
      's1:0-1-1.s2',
      's1:1,2,3',
      'x'.repeat(5000),
    ]) {
      expect(() => CausalToken.parse(text), text).toThrow(InvalidCausalTokenError)
    }
    expect(CausalToken.parse('').isEmpty).toBe(true)
  })
})

const SECRET_A = 'aaaaaaaaaaaaaaaa-causal-token-secret-A'
const SECRET_B = 'bbbbbbbbbbbbbbbb-causal-token-secret-B'
const SECRET_X = 'xxxxxxxxxxxxxxxx-causal-token-secret-X'
const tokenChar = fc.constantFrom(...'s1:0-9~.+_Az\u0000\u00e9\ud83d')
const tokenArb = fc
  .array(fc.tuple(shardId, gtid), { maxLength: 4 })
  .map((es) => es.reduce((t, [s, g]) => t.merge(CausalToken.of(s, g)), CausalToken.empty))

describe('CausalToken signing', () => {
  it('signs with the first secret and verifies with any, so a secret can be rotated', () => {
    const token = CausalToken.of('s1', '0-1-42').merge(CausalToken.of('s2', '0-2-7,1-2-3'))
    const old = token.sign(SECRET_B)
    const current = token.sign([SECRET_A, SECRET_B])
    expect(current).toBe(token.sign(SECRET_A))
    expect(current).toMatch(/^[A-Za-z0-9_.:+-]*~[A-Za-z0-9_-]{43}$/)
    for (const text of [old, current]) {
      const back = CausalToken.verify(text, [SECRET_A, SECRET_B])
      expect(back?.toString()).toBe(token.toString())
    }
    expect(CausalToken.verify(old, SECRET_A)).toBeUndefined()
    expect(CausalToken.verify('', SECRET_A)?.isEmpty).toBe(true)
  })

  it('refuses an unsigned, a tampered and a foreign-signed token', () => {
    const signed = CausalToken.of('s1', '0-1-42').sign(SECRET_A)
    const [payload, sig] = signed.split('~') as [string, string]
    for (const text of [
      payload,
      `s1:0-1-999999999999~${sig}`,
      `${payload}~${sig.slice(0, -1)}${sig.endsWith('A') ? 'B' : 'A'}`,
      CausalToken.of('s1', '0-1-42').sign(SECRET_X),
      `${signed}~${sig}`,
      `${payload}.s2:0-1-1~${sig}`,
    ]) {
      expect(CausalToken.verify(text, SECRET_A), text).toBeUndefined()
    }
  })

  it('refuses secrets shorter than 32 characters, naming the option', () => {
    expect(() => CausalToken.empty.sign('short')).toThrow(/invalid option "secrets"/)
    expect(() => CausalToken.empty.sign('short')).toThrow(
      'invalid option "secrets": expected a string of at least 32 characters or an array of them, got a string of 5 characters',
    )
    expect(() => CausalToken.verify('', [])).toThrow(InvalidArgumentError)
  })

  it('(fuzz) never throws on any string and never accepts one not signed with a known secret', () => {
    const secrets = [SECRET_A, SECRET_B]
    const mutated = fc
      .tuple(
        tokenArb,
        fc.constantFrom(SECRET_A, SECRET_B, SECRET_X),
        fc.nat(),
        fc.string({ maxLength: 8 }),
        fc.integer({ min: 0, max: 3 }),
      )
      .map(([token, secret, at, insert, how]) => {
        const text = token.sign(secret)
        const i = at % (text.length + 1)
        if (how === 0) return text
        if (how === 1) return text.slice(0, i)
        if (how === 2) return text.slice(0, i) + insert + text.slice(i)
        return text.slice(0, i) + insert + text.slice(i + 1)
      })
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: tokenChar }), mutated),
        (text) => {
          const token = CausalToken.verify(text, secrets)
          if (token !== undefined) {
            // Accepted: it is exactly a token's signature under one of the secrets.
            expect(secrets.some((s) => token.sign(s) === text) || text === '').toBe(true)
          }
          try {
            CausalToken.parse(text)
          } catch (error) {
            expect(error).toBeInstanceOf(InvalidCausalTokenError)
          }
        },
      ),
      { numRuns: 500, seed: 4 },
    )
  })
})
