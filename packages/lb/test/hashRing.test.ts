import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  DuplicateEndpointError,
  EmptyRingError,
  HashRing,
  InvalidWeightError,
  murmur3,
  UnknownEndpointError,
} from '../src/index.js'

const keys = (n: number, prefix = 'key-') => Array.from({ length: n }, (_, i) => `${prefix}${i}`)

function owners(ring: HashRing, list: string[]): string[] {
  return list.map((k) => ring.get(k))
}

describe('murmur3', () => {
  it('matches the reference MurmurHash3 x86_32 vectors', () => {
    expect(murmur3('')).toBe(0)
    expect(murmur3('hello')).toBe(0x248bfa47)
    expect(murmur3('The quick brown fox jumps over the lazy dog')).toBe(0x2e4ff723)
  })

  it('hashes a string like the Buffer of its UTF-8 bytes, for any string and seed', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.integer(), (s, seed) => {
        expect(murmur3(s, seed)).toBe(murmur3(Buffer.from(s, 'utf8'), seed))
      }),
    )
  })
})

describe('HashRing', () => {
  describe('get', () => {
    it('maps a key to the same node every time, and a Buffer key like its string', () => {
      const ring = new HashRing(['a', 'b', 'c'])
      for (const k of keys(200)) {
        expect(ring.get(k)).toBe(ring.get(k))
        expect(ring.get(Buffer.from(k))).toBe(ring.get(k))
      }
    })

    it('does not depend on the order nodes were added in', () => {
      const one = new HashRing(['a', 'b', 'c', 'd'])
      const two = new HashRing(['d', 'c'])
      two.add('b').add('a')
      expect(owners(two, keys(2000))).toEqual(owners(one, keys(2000)))
    })

    it('keeps every node within 5 % of the mean load for 1M keys on 16 nodes at defaults', () => {
      const ring = new HashRing(keys(16, 'node-'))
      const counts = new Map<string, number>()
      for (let i = 0; i < 1_000_000; i++) {
        const n = ring.get(`key-${i}`)
        counts.set(n, (counts.get(n) ?? 0) + 1)
      }
      expect(counts.size).toBe(16)
      expect(Math.max(...counts.values()) / (1_000_000 / 16)).toBeLessThanOrEqual(1.05)
    })

    it('throws a typed error on an empty ring', () => {
      expect(() => new HashRing().get('x')).toThrow(EmptyRingError)
    })
  })

  describe('add', () => {
    it('moves only keys that now belong to the new node, about 1/(n+1) of them', () => {
      const list = keys(20_000)
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), {
            minLength: 2,
            maxLength: 10,
          }),
          fc.string({ minLength: 1, maxLength: 12 }),
          (ids, extra) => {
            fc.pre(!ids.includes(extra))
            const ring = new HashRing(ids, { pointsPerWeight: 1024 })
            const before = owners(ring, list)
            ring.add(extra)
            const after = owners(ring, list)
            let moved = 0
            for (let i = 0; i < list.length; i++) {
              if (after[i] !== before[i]) {
                moved++
                expect(after[i]).toBe(extra)
              }
            }
            expect(moved / list.length).toBeLessThanOrEqual((1.2 * 1) / (ids.length + 1))
          },
        ),
        { numRuns: 15 },
      )
    })

    it('moves at most 1.05 × the ideal share when a 17th node joins 16 at defaults, none between old nodes', () => {
      const list = keys(200_000)
      const ring = new HashRing(keys(16, 'node-'))
      const before = owners(ring, list)
      ring.add('node-16')
      let moved = 0
      let between = 0
      for (let i = 0; i < list.length; i++) {
        const now = ring.get(list[i]!)
        if (now !== before[i]) {
          moved++
          if (now !== 'node-16') between++
        }
      }
      expect(between).toBe(0)
      expect(moved / list.length / (1 / 17)).toBeLessThanOrEqual(1.05)
    })

    it('gives a weighted node its weighted share, moving keys only to it', () => {
      const list = keys(50_000)
      const ring = new HashRing(['a', 'b', 'c'])
      const before = owners(ring, list)
      ring.add('heavy', 3)
      let moved = 0
      for (let i = 0; i < list.length; i++) {
        const now = ring.get(list[i]!)
        if (now !== before[i]) {
          moved++
          expect(now).toBe('heavy')
        }
      }
      expect(moved / list.length).toBeGreaterThan(0.45)
      expect(moved / list.length).toBeLessThan(0.55)
    })

    it('rejects a duplicate id and an invalid weight, naming them', () => {
      const ring = new HashRing(['a'])
      expect(() => ring.add('a')).toThrow(DuplicateEndpointError)
      expect(() => ring.add('a')).toThrow(/"a"/)
      expect(() => ring.add('b', 0)).toThrow(InvalidWeightError)
      expect(() => ring.add('b', Number.NaN)).toThrow(/"b".*NaN/)
      expect(() => new HashRing(['x', 'x'])).toThrow(DuplicateEndpointError)
      expect(() => new HashRing([{ id: 'x', weight: -1 }])).toThrow(InvalidWeightError)
    })
  })

  describe('remove', () => {
    it('moves only the removed node’s keys', () => {
      const list = keys(20_000)
      const ring = new HashRing(['a', 'b', 'c', 'd'])
      const before = owners(ring, list)
      expect(ring.remove('c')).toBe(true)
      expect(ring.remove('c')).toBe(false)
      for (let i = 0; i < list.length; i++) {
        if (before[i] !== 'c') expect(ring.get(list[i]!)).toBe(before[i])
        else expect(ring.get(list[i]!)).not.toBe('c')
      }
    })
  })

  describe('setWeight', () => {
    it('raising a weight moves keys only to that node, lowering it only away from it', () => {
      const list = keys(20_000)
      const ring = new HashRing(['a', 'b', 'c'])
      const before = owners(ring, list)
      ring.setWeight('b', 2)
      const raised = owners(ring, list)
      for (let i = 0; i < list.length; i++) if (raised[i] !== before[i]) expect(raised[i]).toBe('b')
      ring.setWeight('b', 0.5)
      const lowered = owners(ring, list)
      for (let i = 0; i < list.length; i++)
        if (lowered[i] !== raised[i]) expect(raised[i]).toBe('b')
      expect(() => ring.setWeight('zz', 1)).toThrow(UnknownEndpointError)
      expect(() => ring.setWeight('a', -2)).toThrow(InvalidWeightError)
      expect(ring.nodes()).toEqual([
        { id: 'a', weight: 1 },
        { id: 'b', weight: 0.5 },
        { id: 'c', weight: 1 },
      ])
    })
  })

  describe('getN', () => {
    it('returns distinct nodes, the first being get()’s answer, where the key goes if it is removed next', () => {
      const ring = new HashRing(['a', 'b', 'c', 'd'])
      for (const k of keys(300)) {
        const [first, second] = ring.getN(k, 2)
        expect(first).toBe(ring.get(k))
        expect(second).not.toBe(first)
        const copy = new HashRing(['a', 'b', 'c', 'd'])
        copy.remove(first!)
        expect(copy.get(k)).toBe(second)
      }
      expect(ring.getN('k', 10)).toHaveLength(4)
    })
  })
})
