import { describe, expect, it } from 'vitest'
import { type RecordedCall, servedAgainAfter, startLoad, summarizeCalls } from '../src/index.js'

const failure = (code?: string) => Object.assign(new Error('no'), code ? { code } : {})

describe('startLoad', () => {
  it('records every call, goes on after a failure, and stops when asked', async () => {
    const load = startLoad(3, async (loop, i, rec) => {
      await rec.call('op', `k${loop}`, async () => {
        if (i % 2 === 1) throw failure('E_X')
        return i
      })
    })
    await new Promise((resolve) => setTimeout(resolve, 20))
    await load.stop()
    const count = load.calls.length
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(load.calls.length).toBe(count) // stopped
    const summary = summarizeCalls(load.calls)
    expect(summary.calls).toBeGreaterThan(3)
    expect(summary.errors).toBe(load.calls.filter((c) => 'error' in c).length)
    expect(Object.keys(summary.errorsByCode)).toEqual(['E_X'])
  })
})

describe('summarizeCalls', () => {
  it('counts errors by code, untyped ones apart, and gives p99 and max of one op', () => {
    const calls: RecordedCall[] = [
      ...Array.from({ length: 100 }, (_, i) => ({ op: 'a', key: 'k', startedAt: 0, ms: i + 1 })),
      { op: 'a', key: 'k', startedAt: 0, ms: 500, error: failure('E_A') },
      { op: 'a', key: 'k', startedAt: 0, ms: 5, error: failure() },
      { op: 'b', key: 'k', startedAt: 0, ms: 9999 },
    ]
    expect(summarizeCalls(calls, 'a')).toEqual({
      calls: 102,
      errors: 2,
      errorsByCode: { E_A: 1, untyped: 1 },
      p99Ms: 100,
      maxMs: 500,
    })
  })
})

describe('servedAgainAfter', () => {
  const onVictim = (key: string) => key.startsWith('v')
  it('is the first success on the keys after their last failure, from the kill', () => {
    const calls: RecordedCall[] = [
      { op: 'x', key: 'v1', startedAt: 1000, ms: 50 }, // before the kill
      { op: 'x', key: 'h1', startedAt: 1100, ms: 10 }, // another node's key
      { op: 'x', key: 'v1', startedAt: 1100, ms: 1200, error: failure('E') }, // fails at 2300
      { op: 'x', key: 'v2', startedAt: 1200, ms: 2000 }, // waited, served at 3200
      { op: 'x', key: 'v3', startedAt: 2400, ms: 900 }, // served at 3300
    ]
    expect(servedAgainAfter(calls, 1050, onVictim)).toBe(2150)
  })
  it('is undefined when no call on the keys succeeded after the kill', () => {
    const calls: RecordedCall[] = [{ op: 'x', key: 'v1', startedAt: 10, ms: 5, error: failure() }]
    expect(servedAgainAfter(calls, 0, onVictim)).toBeUndefined()
  })
})
