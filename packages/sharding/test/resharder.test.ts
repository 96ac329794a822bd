import { afterAll, describe, expect, it } from 'vitest'
import {
  createResharder,
  createSlotMapStore,
  InvalidArgumentError,
  planResharding,
  planReshardingFrom,
  type SlotMap,
} from '../src/index.js'
import { rangesFromRing } from '../src/internal/slotRanges.js'

const two = [{ id: 's1' }, { id: 's2' }]
const three = [{ id: 's1' }, { id: 's2' }, { id: 's3' }]

function ringMap(shards: Array<{ id: string }>, slots = 4096): SlotMap {
  return { version: 1, slots, ranges: rangesFromRing(shards, slots, {}) }
}

describe('planReshardingFrom', () => {
  it('from a map of the ring placement, plans what planResharding plans', () => {
    expect(planReshardingFrom(ringMap(two), three)).toEqual(planResharding(two, three))
    expect(planReshardingFrom(ringMap(three), two)).toEqual(planResharding(three, two))
  })

  it('starts from the map as it is: slots already moved are not moved again', () => {
    const full = planResharding(two, three)
    const edge = full.moves[0]!
    const [start, end] = edge.ranges[0]!
    // The first range of the largest edge has been cut over to s3 already.
    const map = ringMap(two)
    const ranges = map.ranges.flatMap((r) => {
      if (r.end <= start || r.start >= end) return [r]
      return [
        ...(r.start < start ? [{ ...r, end: start }] : []),
        { start, end, shard: 's3' },
        ...(r.end > end ? [{ ...r, start: end }] : []),
      ]
    })
    const plan = planReshardingFrom({ ...map, ranges }, three)
    expect(plan.movedSlots).toBe(full.movedSlots - (end - start))
    const after = plan.moves.find((m) => m.from === edge.from && m.to === 's3')!
    expect(after.ranges).toEqual(edge.ranges.slice(1))
  })

  it('removing a shard moves only its slots, to the others', () => {
    const plan = planReshardingFrom(ringMap(three), two)
    expect(new Set(plan.moves.map((m) => m.from))).toEqual(new Set(['s3']))
    expect(plan.shares.s3).toEqual({ before: expect.any(Number), after: 0 })
    expect(plan.movedSlots).toBe(plan.moves.reduce((n, m) => n + m.slots, 0))
  })

  it('refuses an empty next shard list', () => {
    expect(() => planReshardingFrom(ringMap(two), [])).toThrow(InvalidArgumentError)
  })
})

describe('createResharder', () => {
  const store = createSlotMapStore({
    server: 'mysql://root@127.0.0.1:1/none',
    lease: 1000,
    interval: 100,
  })
  afterAll(() => store.close())
  const shards = three.map((s) => ({ ...s, primary: 'mysql://root@127.0.0.1:1/none' }))
  const tables = [{ table: 'orders', key: 'user_id' }]

  it('refuses a grace period shorter than the lease, naming the option', () => {
    expect(() => createResharder({ store, shards, tables, grace: 500 })).toThrow(
      /invalid option "grace": expected at least the store's lease \(1000 ms\)/,
    )
  })

  it('refuses a heartbeat timeout not longer than the interval', () => {
    expect(() =>
      createResharder({ store, shards, tables, interval: 1000, heartbeatTimeout: 1000 }),
    ).toThrow(/invalid option "heartbeatTimeout"/)
  })

  it('refuses a next shard list naming a shard it was not given, before any I/O', async () => {
    const resharder = createResharder({ store, shards, tables })
    await expect(resharder.plan([{ id: 's1' }, { id: 's9' }])).rejects.toThrow(
      /invalid argument "next\[1\]\.id": expected one of the resharder's shards, got "s9"/,
    )
    await expect(resharder.plan([{ id: 's1' }, { id: 's1' }])).rejects.toThrow(
      /a shard listed once/,
    )
    await resharder.close()
    await expect(resharder.status()).rejects.toMatchObject({ code: 'E_SHARD_CLOSED' })
  })
})
