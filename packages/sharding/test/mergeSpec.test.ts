import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { compareValues } from '../src/index.js'
import { addDecimalStrings } from '../src/internal/decimal.js'
import { checkMergeSpec, mergeAggregates, mergeSorted, rowComparator } from '../src/mergeSpec.js'

describe('mergeSorted', () => {
  it('gives the same rows as sorting everything, for any sorted inputs and limit', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.array(fc.record({ a: fc.integer({ min: 0, max: 20 }), b: fc.integer() }), {
            maxLength: 30,
          }),
          {
            maxLength: 6,
          },
        ),
        fc.nat(100),
        (lists, take) => {
          const cmp = rowComparator([{ column: 'a', direction: 'desc' }, 'b'])
          const sorted = lists.map((l) => [...l].sort(cmp))
          const expected = sorted.flat().sort(cmp).slice(0, take)
          const got = mergeSorted(sorted, cmp, take)
          expect(got.map((r) => [r.a, r.b])).toEqual(expected.map((r) => [r.a, r.b]))
        },
      ),
      { seed: 16, numRuns: 100 },
    )
  })
})

describe('mergeAggregates', () => {
  it('adds counts and sums, keeps extremes and averages from SUM and COUNT', () => {
    const rows = mergeAggregates(
      [
        [{ n: 2, s: '10.50', lo: 1, hi: 9, avg: 5.25 }],
        [{ n: 3, s: '4.25', lo: 0, hi: 4, avg: 1.4 }],
        [{ n: 0, s: null, lo: null, hi: null, avg: null }],
      ],
      {
        aggregate: {
          n: 'count',
          s: 'sum',
          lo: 'min',
          hi: 'max',
          avg: { avg: { sum: 's', count: 'n' } },
        },
      },
    )
    expect(rows).toEqual([{ n: 5, s: '14.75', lo: 0, hi: 9, avg: 2.95 }])
  })

  it('combines groups by their GROUP BY columns', () => {
    const rows = mergeAggregates(
      [
        [
          { status: 'paid', n: 2 },
          { status: 'new', n: 1 },
        ],
        [{ status: 'paid', n: 5 }],
      ],
      { aggregate: { n: 'count' }, groupBy: ['status'], orderBy: 'status' },
    )
    expect(rows).toEqual([
      { status: 'new', n: 1 },
      { status: 'paid', n: 7 },
    ])
  })
})

describe('addDecimalStrings', () => {
  it('adds DECIMAL strings exactly', () => {
    expect(addDecimalStrings('0.1', '0.2')).toBe('0.3')
    expect(addDecimalStrings('99999999999999999999', '1')).toBe('100000000000000000000')
    expect(addDecimalStrings('-1.50', '0.25')).toBe('-1.25')
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }),
        fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }),
        (a, b) => {
          expect(addDecimalStrings(String(a), String(b))).toBe(String(a + b))
        },
      ),
      { seed: 17, numRuns: 100 },
    )
  })
})

describe('compareValues', () => {
  it('puts NULL first and compares numbers, bigints and dates by value', () => {
    expect(compareValues(null, 1)).toBeLessThan(0)
    expect(compareValues(2, 10)).toBeLessThan(0)
    expect(compareValues(2n, 10)).toBeLessThan(0)
    expect(compareValues(new Date(2), new Date(1))).toBeGreaterThan(0)
    expect(compareValues('b', 'a')).toBeGreaterThan(0)
  })
})

describe('checkMergeSpec', () => {
  it('asks each shard for offset + limit rows and rejects bad specs by name', () => {
    expect(checkMergeSpec({ orderBy: 'a', limit: 10, offset: 5 })).toBe(15)
    expect(checkMergeSpec({ orderBy: 'a' })).toBeUndefined()
    expect(() => checkMergeSpec({ orderBy: 'a', limit: -1 })).toThrow(/"merge\.limit"/)
    expect(() => checkMergeSpec({ orderBy: [] })).toThrow(/"merge\.orderBy"/)
    expect(() => checkMergeSpec({ aggregate: { n: 'median' as never } })).toThrow(
      `invalid argument "merge.aggregate.n": expected 'count', 'sum', 'min', 'max' or { avg: { sum, count } }, got "median"`,
    )
    expect(() => checkMergeSpec({ orderBy: 'a', limit: 1.5 })).toThrow(
      'invalid argument "merge.limit": expected an integer >= 0, got 1.5',
    )
    expect(() =>
      checkMergeSpec({ orderBy: ['a', { column: 'b', direction: 'up' as never }] }),
    ).toThrow(
      'invalid argument "merge.orderBy[1].direction": expected one of "asc", "desc", got "up"',
    )
  })
})
