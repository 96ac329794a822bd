import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  ClockMovedBackwardsError,
  createIdGenerator,
  InvalidArgumentError,
  ShardKeyMissingError,
  slotFor,
} from '../src/index.js'

describe('createIdGenerator', () => {
  it('makes strictly increasing, positive 63-bit ids', () => {
    const ids = createIdGenerator({ workerId: 3 })
    let last = 0n
    for (let i = 0; i < 20_000; i++) {
      const id = ids.next()
      expect(id > last).toBe(true)
      expect(id < 1n << 63n).toBe(true)
      last = id
    }
  })

  it('never collides across workers in the same millisecond', () => {
    const clock = () => 1_800_000_000_000
    let t = clock()
    const now = () => t
    const a = createIdGenerator({ workerId: 1, now })
    const b = createIdGenerator({ workerId: 2, now })
    const seen = new Set<bigint>()
    for (let i = 0; i < 3000; i++) {
      if (i % 1000 === 999) t++
      seen.add(a.next())
      seen.add(b.next())
    }
    expect(seen.size).toBe(6000)
  })

  it('orders ids by time and decodes their fields', () => {
    let t = 1_800_000_000_000
    const ids = createIdGenerator({ workerId: 5, now: () => t })
    const first = ids.next()
    t += 7
    const second = ids.next()
    expect(second > first).toBe(true)
    expect(ids.decode(second)).toEqual({ timestamp: t, slot: undefined, workerId: 5, sequence: 0 })
    expect(ids.decode(String(first)).timestamp).toBe(t - 7)
  })

  it('embeds the owning key slot so an id routes to its owner', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ minLength: 1 }), fc.integer(), fc.bigInt({ min: 0n })),
        (owner) => {
          const ids = createIdGenerator({
            workerId: 9,
            slotBits: 12,
            workerBits: 4,
            sequenceBits: 6,
          })
          const id = ids.next(owner)
          expect(ids.slotOf(id).slot).toBe(slotFor(owner, 4096))
          expect(ids.decode(id).workerId).toBe(9)
        },
      ),
      { seed: 16, numRuns: 100 },
    )
  })

  it('asks for the owning key when the layout embeds a slot', () => {
    const ids = createIdGenerator({ slotBits: 10, workerBits: 4, sequenceBits: 8 })
    expect(() => ids.next()).toThrow(ShardKeyMissingError)
    expect(() => createIdGenerator().slotOf(1n)).toThrow(InvalidArgumentError)
  })

  it('waits for the next millisecond when the sequence runs out', () => {
    let t = 1_800_000_000_000
    let reads = 0
    const ids = createIdGenerator({
      sequenceBits: 2,
      now: () => {
        reads++
        if (reads > 6) t++
        return t
      },
    })
    const got = Array.from({ length: 6 }, () => ids.next())
    expect(new Set(got).size).toBe(6)
    expect(ids.decode(got[4]!).timestamp).toBeGreaterThan(ids.decode(got[3]!).timestamp)
  })

  it('keeps counting through a small clock step back and refuses a large one', () => {
    let t = 1_800_000_000_000
    const ids = createIdGenerator({ now: () => t, maxClockBackwards: 50 })
    const a = ids.next()
    t -= 20
    const b = ids.next()
    expect(b > a).toBe(true)
    t -= 100
    expect(() => ids.next()).toThrow(ClockMovedBackwardsError)
  })

  it('never reissues an id after the sequence ran out and next() threw', () => {
    let t = 1_800_000_000_000
    // A clock stuck on one millisecond: the third id of it cannot be made.
    const ids = createIdGenerator({ sequenceBits: 1, maxClockBackwards: 0, now: () => t })
    const issued: bigint[] = [ids.next(), ids.next()]
    for (let i = 0; i < 3; i++) {
      try {
        issued.push(ids.next())
      } catch (error) {
        expect(error).toBeInstanceOf(ClockMovedBackwardsError)
      }
    }
    t++
    for (let i = 0; i < 2; i++) issued.push(ids.next())
    expect(new Set(issued).size).toBe(issued.length)
    expect(issued).toEqual([...issued].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
  })

  it('throws at once rather than spinning when the sequence runs out during a clock step back', () => {
    let t = 1_800_000_000_000
    let reads = 0
    const ids = createIdGenerator({
      sequenceBits: 1,
      maxClockBackwards: 1000,
      now: () => {
        reads++
        return t
      },
    })
    ids.next()
    t -= 800 // NTP steps the clock back: ids keep counting from the last millisecond used
    ids.next()
    reads = 0
    // The millisecond is used up and the clock is 800 ms behind it: waiting would block the
    // event loop for 800 ms, so next() refuses (retryably) after a look at the clock.
    expect(() => ids.next()).toThrow(ClockMovedBackwardsError)
    expect(reads).toBeLessThan(5)
  })

  it('throws rather than hangs when neither its clock nor Date.now moves (fake timers)', () => {
    const realNow = Date.now
    Date.now = () => 1_800_000_000_000 // what fake timers do to it
    try {
      let reads = 0
      const ids = createIdGenerator({
        sequenceBits: 1,
        now: () => {
          // Escape hatch so a regression fails here instead of spinning forever.
          if (++reads > 3_000_000) throw new Error('next() spun on a clock that never moves')
          return Date.now()
        },
      })
      ids.next()
      ids.next()
      expect(() => ids.next()).toThrow(ClockMovedBackwardsError)
    } finally {
      Date.now = realNow
    }
  })

  it('(fuzz) issues strictly increasing ids whatever the clock does, and throws only ClockMovedBackwardsError', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.oneof(fc.integer({ min: -1500, max: 3 }), fc.constant(0), fc.constant(1)),
            fc.integer({ min: 1, max: 6 }),
          ),
          { maxLength: 20 },
        ),
        (steps) => {
          let t = 1_800_000_000_000
          const ids = createIdGenerator({
            sequenceBits: 2,
            maxClockBackwards: 1000,
            now: () => t,
          })
          let last = -1n
          for (const [delta, calls] of steps) {
            t += delta
            for (let i = 0; i < calls; i++) {
              let id: bigint
              try {
                id = ids.next()
              } catch (error) {
                expect(error).toBeInstanceOf(ClockMovedBackwardsError)
                continue
              }
              expect(id > last).toBe(true)
              last = id
            }
          }
        },
      ),
      { numRuns: 60, seed: 17 },
    )
  })

  it('takes a clock with fractions of a millisecond, and refuses a clock it cannot use with its typed error', () => {
    let t = 1_800_000_000_000.25
    const ids = createIdGenerator({ now: () => t })
    const a = ids.next()
    t += 0.5 // same millisecond
    const b = ids.next()
    expect(b > a).toBe(true)
    expect(ids.decode(b)).toMatchObject({ timestamp: 1_800_000_000_000, sequence: 1 })
    // NaN, or a clock before the epoch (a machine booted with its clock at 1970): never a
    // RangeError and never a negative id.
    for (const reading of [Number.NaN, 1_704_067_199_999, 0]) {
      const broken = createIdGenerator({ now: () => reading })
      expect(() => broken.next()).toThrow(InvalidArgumentError)
    }
  })

  it('names the option when a layout is invalid', () => {
    expect(() => createIdGenerator({ workerId: 1024 })).toThrow(/invalid option "workerId"/)
    expect(() => createIdGenerator({ slotBits: 12 })).toThrow(/invalid option "slotBits"/)
    expect(() => createIdGenerator({ sequenceBits: 0 })).toThrow(/invalid option "sequenceBits"/)
    expect(() => createIdGenerator({ epoch: -1 })).toThrow(/invalid option "epoch"/)
  })

  it('refuses an id that is not a 63-bit positive integer with InvalidArgumentError, never a SyntaxError', () => {
    const ids = createIdGenerator({ slotBits: 12, workerBits: 4, sequenceBits: 6 })
    for (const bad of ['abc', '1.5', '', '-1', 1.5, '9223372036854775808', ' 12x']) {
      expect(() => ids.slotOf(bad), String(bad)).toThrow(InvalidArgumentError)
      expect(() => ids.decode(bad), String(bad)).toThrow(
        /^invalid argument "id": expected a 63-bit positive integer/,
      )
    }
  })
})
