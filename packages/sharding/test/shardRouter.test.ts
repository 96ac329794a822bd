import { describe, expect, it } from 'vitest'
import {
  createShardRouter,
  InvalidArgumentError,
  RouterClosedError,
  ShardKeyMissingError,
  type ShardRouter,
  slotFor,
  sqlIdentifier,
  UnsafeStatementError,
} from '../src/index.js'

// Pools connect lazily: nothing here touches a server.
const url = 'mysql://nobody@127.0.0.1:1/none'
function router(n: number, extra: Record<string, unknown> = {}): ShardRouter {
  return createShardRouter({
    shards: Array.from({ length: n }, (_, i) => ({ id: `s${i}`, primary: url, replicas: [url] })),
    healthCheckInterval: 0,
    ...extra,
  })
}

describe('ShardRouter (no server)', () => {
  it('routes a key to the same shard every time, and 42, "42" and 42n alike', async () => {
    const r = router(4)
    expect(r.shardFor(42)).toBe(r.shardFor('42'))
    expect(r.shardFor(42n)).toBe(r.shardFor('42'))
    expect(r.shardFor({ slot: r.slotFor('user:7') })).toBe(r.shardFor('user:7'))
    await r.close()
  })

  it('spreads keys evenly over equal shards and by weight over weighted ones', async () => {
    const r = router(4)
    const counts = new Map<string, number>()
    for (let i = 0; i < 40_000; i++) counts.set(r.shardFor(i), (counts.get(r.shardFor(i)) ?? 0) + 1)
    for (const c of counts.values()) expect(Math.abs(c / 10_000 - 1)).toBeLessThan(0.1)
    await r.close()
    const w = createShardRouter({
      shards: [
        { id: 'a', primary: url },
        { id: 'b', primary: url, weight: 3 },
      ],
    })
    let b = 0
    for (let i = 0; i < 20_000; i++) if (w.shardFor(`u${i}`) === 'b') b++
    expect(b / 20_000).toBeGreaterThan(0.7)
    expect(b / 20_000).toBeLessThan(0.8)
    await w.close()
  })

  it('refuses a missing shard key with a typed error, never a guess', async () => {
    const r = router(2)
    for (const key of [undefined, null, '', Number.NaN, Number.POSITIVE_INFINITY]) {
      await expect(r.query(key as never, 'SELECT 1')).rejects.toThrow(ShardKeyMissingError)
      expect(() => r.shardFor(key as never)).toThrow(ShardKeyMissingError)
    }
    await expect(r.transaction(undefined as never, async () => 1)).rejects.toThrow(
      ShardKeyMissingError,
    )
    expect(() => r.shardFor({ slot: 99_999 })).toThrow(ShardKeyMissingError)
    await r.close()
  })

  it('refuses several statements in one string before sending anything', async () => {
    const r = router(1)
    await expect(r.query(1, 'SELECT 1; DROP TABLE users')).rejects.toThrow(UnsafeStatementError)
    await expect(r.all('DELETE FROM t; DROP TABLE users')).rejects.toThrow(UnsafeStatementError)
    await r.close()
  })

  it('validates caller identifiers', () => {
    expect(sqlIdentifier('orders_eu')).toBe('`orders_eu`')
    for (const bad of ['orders`; DROP TABLE x; --', 'a b', '1abc', '', 'x'.repeat(65), 'a.b']) {
      expect(() => sqlIdentifier(bad), bad).toThrow(UnsafeStatementError)
    }
  })

  it('names the option that is wrong', () => {
    const shards = [{ id: 's1', primary: url }]
    expect(() => createShardRouter({ shards: [] })).toThrow(/invalid option "shards"/)
    expect(() => createShardRouter({ shards, slots: 1000 })).toThrow(/invalid option "slots"/)
    expect(() => createShardRouter({ shards, gtidWaitTimeout: -5 })).toThrow(
      /^invalid option "gtidWaitTimeout": expected a positive duration .*, got -5$/,
    )
    expect(() => createShardRouter({ shards, consistency: 'fresh' as never })).toThrow(
      /invalid option "consistency"/,
    )
    expect(() => createShardRouter({ shards: [{ id: 'a b', primary: url }] })).toThrow(
      InvalidArgumentError,
    )
    expect(() => createShardRouter({ shards: [shards[0]!, shards[0]!] })).toThrow(
      /^invalid option "shards\[1\]\.id": expected an id no other shard has/,
    )
  })

  it('refuses a causal token that is neither a string nor a CausalToken with InvalidArgumentError', async () => {
    const r = router(1)
    for (const bad of [null, 42, {}, ['s0:0-1-1']]) {
      expect(() => r.run({ causalToken: bad as never }, () => 1)).toThrow(InvalidArgumentError)
    }
    await r.close()
  })

  it('rejects statements after close', async () => {
    const r = router(1)
    await r.close()
    await expect(r.query(1, 'SELECT 1')).rejects.toThrow(RouterClosedError)
  })

  it('agrees with slotFor on which slot a key hashes to', async () => {
    const r = router(2, { slots: 1024 })
    expect(r.slotFor('user:1')).toBe(slotFor('user:1', 1024))
    await r.close()
  })
})
