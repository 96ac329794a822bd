import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CausalToken, InvalidCausalTokenError } from '../src/index.js'

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
