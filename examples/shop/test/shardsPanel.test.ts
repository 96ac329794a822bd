/**
 * The ops page's Shards panel without a browser: the slot map summed up per shard and per
 * moving phase, a run's progress in words, the routers' map versions, and the buttons each
 * state of a run offers (escaped like every value of the page).
 */
import { planResharding, type SlotMap } from '@ballast/sharding'
import { describe, expect, it } from 'vitest'
import {
  moveProgressText,
  type ReshardRunView,
  type ShardsView,
  storeMillisBetween,
  summarizeSlotMap,
} from '../src/platform/reshardView.js'
import { followersText, shardsPanel } from '../src/web/shardsPanel.js'

const map: SlotMap = {
  version: 7,
  slots: 16,
  ranges: [
    { start: 0, end: 4, shard: 'a' },
    { start: 4, end: 6, shard: 'b', moving: { to: 'c', phase: 'copying' } },
    { start: 6, end: 9, shard: 'a', moving: { to: 'c', phase: 'fenced' } },
    { start: 9, end: 12, shard: 'b' },
    { start: 12, end: 13, shard: 'b', moving: { to: 'c', phase: 'copying' } },
    { start: 13, end: 16, shard: 'a' },
  ],
}

const run = (over: Partial<ReshardRunView> = {}): ReshardRunView => ({
  id: 3,
  state: 'running',
  target: ['a', 'b', 'c'],
  moves: [
    { from: 'a', to: 'c', phase: 'catching-up', slots: 702, rowsCopied: 12_345, lagEntries: 14 },
    { from: 'b', to: 'c', phase: 'copying', slots: 655, rowsCopied: 800, lagEntries: 0 },
  ],
  movedSlots: 0,
  totalSlots: 1357,
  rowsCopied: 13_145,
  elapsedMs: 12_400,
  orphaned: false,
  ...over,
})

const view = (over: Partial<ShardsView> = {}): ShardsView => ({
  ...summarizeSlotMap(map, ['a', 'b', 'c']),
  ...over,
})

describe('the slot map summed up', () => {
  it('counts slots and ranges per shard (a moving range for its source), shards owning nothing included', () => {
    const s = summarizeSlotMap(map, ['a', 'b', 'c'])
    expect(s.version).toBe(7)
    expect(s.shards).toEqual([
      { id: 'a', slots: 10, ranges: 3 },
      { id: 'b', slots: 6, ranges: 3 },
      { id: 'c', slots: 0, ranges: 0 },
    ])
    expect(s.shards.reduce((n, x) => n + x.slots, 0)).toBe(map.slots)
  })

  it('groups the moving ranges by source, target and phase', () => {
    expect(summarizeSlotMap(map, ['a', 'b', 'c']).moving).toEqual([
      { from: 'a', to: 'c', phase: 'fenced', ranges: 1, slots: 3 },
      { from: 'b', to: 'c', phase: 'copying', ranges: 2, slots: 3 },
    ])
  })

  it("gives the ring's new shard about a third of the slots once a plan to three shards is applied", () => {
    const plan = planResharding([{ id: 'a' }, { id: 'b' }], [{ id: 'a' }, { id: 'b' }, { id: 'c' }])
    const toC = plan.moves.filter((m) => m.to === 'c').reduce((n, m) => n + m.slots, 0)
    expect(toC / plan.slots).toBeGreaterThan(0.28)
    expect(toC / plan.slots).toBeLessThan(0.39)
  })
})

describe('progress in words', () => {
  it("says a move's phase, rows copied and, from the catch-up on, the lag", () => {
    expect(
      moveProgressText({
        from: 'a',
        to: 'c',
        phase: 'catching-up',
        slots: 1,
        rowsCopied: 12_345,
        lagEntries: 14,
      }),
    ).toBe('catching-up · 12,345 rows copied · lag 14 entries')
    expect(
      moveProgressText({
        from: 'a',
        to: 'c',
        phase: 'copying',
        slots: 1,
        rowsCopied: 0,
        lagEntries: 0,
      }),
    ).toBe('copying · 0 rows copied')
  })

  it("measures a run's time between two of the store's timestamps", () => {
    expect(storeMillisBetween('2026-12-07 18:02:11.123456', '2026-12-07 18:02:23.523000')).toBe(
      12_400,
    )
    expect(storeMillisBetween('', 'garbage')).toBe(0)
  })

  it('says which routing processes follow the map and which lag behind', () => {
    expect(
      followersText(9, [
        { name: 'cart-1', version: 9 },
        { name: 'order-1', version: 9 },
      ]),
    ).toBe('2 of 2 routing processes on version 9')
    expect(
      followersText(9, [
        { name: 'cart-1', version: 9 },
        { name: 'order-1', version: 8 },
        { name: 'payment-1', version: undefined },
      ]),
    ).toBe('1 of 3 routing processes on version 9 (order-1 on 8, payment-1 not answering)')
  })
})

describe('the panel', () => {
  it('offers "Add shard c" when c owns nothing and no run goes on, and stays still (no polling)', () => {
    const html = shardsPanel(
      {
        ...summarizeSlotMap(
          { version: 1, slots: 16, ranges: [{ start: 0, end: 16, shard: 'a' }] },
          ['a', 'c'],
        ),
        addable: 'c',
      },
      [],
      'tok"en',
    ).value
    expect(html).toContain('data-active="0"')
    expect(html).toMatch(/<button data-reshard-action="add-shard"[^>]*>Add shard c<\/button>/)
    expect(html).toContain('name="shard" value="c"')
    // the token is escaped like any value
    expect(html).toContain('value="tok&quot;en"')
    expect(html).not.toContain('data-reshard-action="abort"')
  })

  it('shows each move of a running run, polls, and offers pause and abort, not add', () => {
    const html = shardsPanel(
      view({ run: run(), unavailable: 'a resharding is in progress' }),
      [{ name: 'cart-1', version: 7 }],
      't',
    ).value
    expect(html).toContain('data-active="1"')
    expect(html).toContain('data-run-state="running"')
    expect(html).toMatch(/data-move="a>c" data-phase="catching-up" data-rows-copied="12345"/)
    expect(html).toContain(
      'a → c</td><td>702</td><td>catching-up · 12,345 rows copied · lag 14 entries',
    )
    expect(html).toContain('0 of 1,357 slots moved · 13,145 rows copied')
    expect(html).toContain('data-reshard-action="pause"')
    expect(html).toContain('data-reshard-action="abort"')
    expect(html).not.toContain('data-reshard-action="add-shard"')
    expect(html).toContain('a resharding is in progress')
  })

  it('offers resume for a paused or failed run, and shows the error escaped; a failed run stops the polling', () => {
    const failed = shardsPanel(
      view({
        moving: [],
        run: run({ state: 'failed', error: '<b>ER_ACCESS</b>', orphaned: true }),
      }),
      [],
      't',
    ).value
    expect(failed).toContain('data-active="0"')
    expect(failed).toContain('&lt;b&gt;ER_ACCESS&lt;/b&gt;')
    expect(failed).toContain('(no process runs it)')
    expect(failed).toContain('data-reshard-action="resume"')
    expect(failed).not.toContain('data-reshard-action="pause"')
    const paused = shardsPanel(view({ run: run({ state: 'paused' }) }), [], 't').value
    expect(paused).toContain('data-reshard-action="resume"')
    expect(paused).toContain('data-reshard-action="abort"')
  })

  it('shows a finished run without buttons but the next add, and says when the supervisor did not answer', () => {
    const done = shardsPanel(
      view({ moving: [], run: run({ state: 'done', movedSlots: 1357 }) }),
      [],
      't',
    ).value
    expect(done).toContain('data-active="0"')
    expect(done).toContain('<strong class="ok">done</strong>')
    expect(done).not.toMatch(/data-reshard-action="(pause|resume|abort)"/)
    expect(shardsPanel(undefined, [], 't').value).toContain('The supervisor did not answer')
  })
})
