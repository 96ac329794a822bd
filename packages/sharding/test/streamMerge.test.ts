import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { StreamMerge } from '../src/internal/streamMerge.js'
import { mergeSorted, type Row, rowComparator } from '../src/mergeSpec.js'

const cmp = rowComparator([{ column: 'a', direction: 'desc' }, 'b'])

/** Sorted shards, and an arrival schedule: which shard delivers its next chunk (or ends, or fails). */
const scenario = fc.record({
  lists: fc.array(
    fc.array(
      fc.record({ a: fc.integer({ min: 0, max: 15 }), b: fc.integer({ min: 0, max: 99 }) }),
      {
        maxLength: 25,
      },
    ),
    { minLength: 1, maxLength: 6 },
  ),
  take: fc.nat(80),
  schedule: fc.array(fc.record({ shard: fc.nat(5), chunk: fc.integer({ min: 1, max: 7 }) }), {
    maxLength: 200,
  }),
  failing: fc.option(fc.record({ shard: fc.nat(5), afterRows: fc.nat(25) }), { nil: undefined }),
})

function deliver(
  merger: StreamMerge<Row>,
  lists: Row[][],
  schedule: Array<{ shard: number; chunk: number }>,
  failing?: { shard: number; afterRows: number },
): void {
  const sent = lists.map(() => 0)
  const finished = lists.map(() => false)
  const step = (i: number, chunk: number) => {
    if (finished[i]) return
    const list = lists[i]!
    const sink = merger.sink(i)
    for (let n = 0; n < chunk && sent[i]! < list.length; n++) {
      if (failing?.shard === i && sent[i] === failing.afterRows) {
        finished[i] = true
        merger.fail(i, new Error(`shard ${i} failed`))
        return
      }
      sink.push(list[sent[i]!]!)
      sent[i]!++
    }
    if (sent[i] === list.length) {
      finished[i] = true
      if (failing?.shard === i && sent[i] === failing.afterRows) {
        merger.fail(i, new Error(`shard ${i} failed`))
      } else merger.end(i)
    }
  }
  for (const { shard, chunk } of schedule) step(shard % lists.length, chunk)
  for (let i = 0; i < lists.length; i++) step(i, Number.MAX_SAFE_INTEGER)
}

describe('StreamMerge', () => {
  it('merges rows as they arrive, in any arrival order, into exactly the sorted merge', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ lists, take, schedule }) => {
        const sorted = lists.map((l) => [...l].sort(cmp)) as Row[][]
        const merger = new StreamMerge<Row>(
          sorted.map((_, i) => `s${i}`),
          cmp,
          take,
          'error',
        )
        deliver(merger, sorted, schedule)
        const { rows, failures } = await merger.done
        expect(failures).toEqual([])
        expect(rows).toEqual(mergeSorted(sorted, cmp, take))
      }),
      { seed: 16, numRuns: 100 },
    )
  })

  it('completes as soon as it has its rows, before slower shards have sent theirs', async () => {
    const merger = new StreamMerge<Row>(['fast', 'slow'], cmp, 2, 'error')
    let complete = false
    void merger.done.then(() => {
      complete = true
    })
    merger.sink(0).push({ a: 9, b: 1 })
    merger.sink(0).push({ a: 8, b: 1 })
    merger.sink(1).push({ a: 9, b: 2 })
    expect(merger.complete).toBe(true) // 9/1, 9/2 are the top two; the slow shard's rest is not needed
    await Promise.resolve()
    expect(complete).toBe(true)
    merger.sink(1).push({ a: 1, b: 1 }) // drained, not merged
    merger.end(1)
    expect((await merger.done).rows).toEqual([
      { a: 9, b: 1 },
      { a: 9, b: 2 },
    ])
  })

  it("drops a shard that fails before the merge is complete, with every row it gave ('partial')", async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ lists, take, schedule, failing }) => {
        const sorted = lists.map((l) => [...l].sort(cmp)) as Row[][]
        const merger = new StreamMerge<Row>(
          sorted.map((_, i) => `s${i}`),
          cmp,
          take,
          'partial',
        )
        deliver(merger, sorted, schedule, failing)
        const { rows, failures, answered } = await merger.done
        if (failures.length === 0) {
          // Complete before the failure (or no failure): the exact merge of every shard.
          expect(rows).toEqual(mergeSorted(sorted, cmp, take))
          expect(answered).toHaveLength(sorted.length)
        } else {
          const failed = failing!.shard % sorted.length
          expect(failures.map((f) => f.shard)).toEqual([`s${failed}`])
          const others = sorted.filter((_, i) => i !== failed)
          expect(rows).toEqual(mergeSorted(others, cmp, take))
          expect(answered).not.toContain(`s${failed}`)
        }
      }),
      { seed: 17, numRuns: 100 },
    )
  })

  it("waits for every shard and lists every failure before failing ('error')", async () => {
    const merger = new StreamMerge<Row>(['a', 'b', 'c'], cmp, 10, 'error')
    merger.fail(2, new Error('c down'))
    merger.sink(0).push({ a: 1, b: 1 })
    merger.fail(0, new Error('a down'))
    let settled = false
    void merger.done.then(() => {
      settled = true
    })
    await Promise.resolve()
    expect(settled).toBe(false)
    merger.end(1)
    const { failures } = await merger.done
    expect(failures.map((f) => f.shard)).toEqual(['a', 'c'])
  })
})
