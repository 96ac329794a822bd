import { describe, expect, it } from 'vitest'
import { planResharding } from '../src/index.js'

const shards = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `s${i + 1}` }))

describe('planResharding', () => {
  it('moves only keys that the new shard owns when going from 4 to 5 shards', () => {
    const plan = planResharding(shards(4), shards(5))
    expect(plan.moves.every((m) => m.to === 's5')).toBe(true)
    expect(plan.movedFraction).toBeGreaterThan(0.15)
    expect(plan.movedFraction).toBeLessThan(0.25)
    expect(plan.moves.reduce((n, m) => n + m.slots, 0)).toBe(plan.movedSlots)
    const ranged = plan.moves.flatMap((m) => m.ranges).reduce((n, [a, b]) => n + (b - a), 0)
    expect(ranged).toBe(plan.movedSlots)
    expect(plan.shares.s5!.before).toBe(0)
    expect(plan.shares.s5!.after).toBeCloseTo(plan.movedFraction)
  })

  it('moves only the removed shard keys when a shard leaves', () => {
    const plan = planResharding(shards(5), shards(4))
    expect(plan.moves.every((m) => m.from === 's5')).toBe(true)
    expect(plan.shares.s5!.after).toBe(0)
  })

  it('moves keys only to a shard whose weight grows', () => {
    const plan = planResharding(shards(3), [{ id: 's1' }, { id: 's2', weight: 2 }, { id: 's3' }])
    expect(plan.moves.length).toBeGreaterThan(0)
    expect(plan.moves.every((m) => m.to === 's2')).toBe(true)
    expect(plan.shares.s2!.after).toBeGreaterThan(0.45)
  })

  it('moves nothing when nothing changes', () => {
    expect(planResharding(shards(4), shards(4)).movedSlots).toBe(0)
  })

  it('names the option when slots is not a power of two', () => {
    expect(() => planResharding(shards(2), shards(3), { slots: 1000 })).toThrow(
      /invalid option "slots"/,
    )
  })
})
