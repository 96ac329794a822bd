import { rejection } from '@ballast/testkit'
import { captureListenerErrors } from '@ballast/testkit/vitest'
import { describe, expect, it, vi } from 'vitest'
import {
  createShardRouter,
  DEFAULT_SET_PRIMARY_OPTIONS,
  InvalidArgumentError,
  type PrimarySwitchedEvent,
  ShardingClosedError,
  ShardUnavailableError,
  UnknownShardError,
} from '../src/index.js'

// Pools connect lazily: nothing here touches a server (port 1 refuses at once).
const url = 'mysql://nobody@127.0.0.1:1/none'
const next = 'mysql://app:secret@127.0.0.1:2/none'

function router() {
  return createShardRouter({
    shards: [
      { id: 's0', primary: url, replicas: [url] },
      { id: 's1', primary: url },
    ],
    healthCheckInterval: 0,
    connectTimeout: 200,
  })
}

describe('ShardRouter', () => {
  describe('setPrimary', () => {
    it('has a frozen default drain time of one second', () => {
      expect(DEFAULT_SET_PRIMARY_OPTIONS).toEqual({ drainTimeout: 1000 })
      expect(Object.isFrozen(DEFAULT_SET_PRIMARY_OPTIONS)).toBe(true)
    })

    it('refuses an unknown shard, a bad server and a bad drain time with typed errors, changing nothing', async () => {
      const r = router()
      try {
        expect(await rejection(() => r.setPrimary('nope', next))).toBeInstanceOf(UnknownShardError)
        const badId = await rejection(() => r.setPrimary(7 as unknown as string, next))
        expect(badId).toBeInstanceOf(InvalidArgumentError)
        expect((badId as Error).message).toBe(
          'invalid argument "shardId": expected a shard id, got 7',
        )
        const badServer = await rejection(() => r.setPrimary('s0', 42 as unknown as string))
        expect((badServer as Error).message).toBe(
          'invalid argument "primary": expected a mysql:// URL or mysql2 pool options, got "number"',
        )
        const badDrain = await rejection(() => r.setPrimary('s0', next, { drainTimeout: -1 }))
        expect(badDrain).toBeInstanceOf(InvalidArgumentError)
        expect((badDrain as Error).message).toMatch(/^invalid argument "drainTimeout"/)
        expect(r.stats().shards.s0!.switchovers).toBe(0)
      } finally {
        await r.close()
      }
    })

    it('points the shard at the new server, counts it and emits primary-switched without the credentials', async () => {
      const r = router()
      try {
        const events: PrimarySwitchedEvent[] = []
        r.on('primary-switched', (event) => events.push(event))
        await r.setPrimary('s1', next, { drainTimeout: 0 })
        expect(events).toEqual([
          { shard: 's1', server: '127.0.0.1:2', previous: '127.0.0.1:1', inFlight: 0 },
        ])
        expect(JSON.stringify(events)).not.toContain('secret')
        expect(r.stats().shards.s1!.switchovers).toBe(1)
        expect(r.stats().shards.s0!.switchovers).toBe(0)
        // The statement goes to the new server (port 2 refuses): a typed, retryable error.
        let key = 0
        while (r.shardFor(key) !== 's1') key++
        const error = await rejection(() => r.query(key, 'SELECT 1', [], { use: 'primary' }))
        expect(error).toBeInstanceOf(ShardUnavailableError)
      } finally {
        await r.close()
      }
    })

    it('starts the new primary with a closed breaker: statements are sent to it, not refused', async () => {
      const r = createShardRouter({
        shards: [{ id: 's0', primary: url }],
        healthCheckInterval: 0,
        connectTimeout: 200,
        primaryBreaker: { volumeThreshold: 2, resetTimeout: 3_600_000 },
      })
      try {
        // The old primary refuses connections until its breaker opens (an hour-long open state).
        let error: unknown
        for (let i = 0; i < 10; i++) {
          error = await rejection(() => r.query(1, 'SELECT 1', [], { use: 'primary' }))
          if ((error as Error).message.includes('circuit breaker is open')) break
        }
        expect((error as Error).message).toContain('circuit breaker is open')
        await r.setPrimary('s0', next, { drainTimeout: 0 })
        // The new server (port 2) refuses too, but the statement reached it: the breaker was reset.
        error = await rejection(() => r.query(1, 'SELECT 1', [], { use: 'primary' }))
        expect(error).toBeInstanceOf(ShardUnavailableError)
        expect((error as Error).message).toMatch(/is unavailable \(ECONNREFUSED\)/)
      } finally {
        await r.close()
      }
    })

    it('switches even when a primary-switched listener throws; the error is rethrown in a microtask', async () => {
      const r = router()
      try {
        const boom = new Error('listener bug')
        const rethrown = captureListenerErrors()
        r.on('primary-switched', () => {
          throw boom
        })
        await r.setPrimary('s0', next, { drainTimeout: 0 })
        expect(r.stats().shards.s0!.switchovers).toBe(1)
        await vi.waitFor(() => expect(rethrown).toEqual([boom]))
      } finally {
        await r.close()
      }
    })

    it('is refused after close() with ShardingClosedError', async () => {
      const r = router()
      await r.close()
      const error = await rejection(() => r.setPrimary('s0', next))
      expect(error).toBeInstanceOf(ShardingClosedError)
      expect((error as ShardingClosedError).operation).toBe('setPrimary')
    })
  })
})
