import { rejection } from '@ballast/testkit'
import { describe, expect, it } from 'vitest'
import {
  createShardRouter,
  errors,
  isShardingError,
  RouterClosedError,
  ShardingClosedError,
} from '../src/index.js'

// Pools connect lazily: nothing here touches a server.
const url = 'mysql://nobody@127.0.0.1:1/none'

async function expectClosed(call: () => Promise<unknown>, operation: string): Promise<void> {
  const error = await rejection(call)
  expect(error).toBeInstanceOf(ShardingClosedError)
  expect(isShardingError(error)).toBe(true)
  const closed = error as ShardingClosedError
  expect(closed.code).toBe('E_SHARD_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.operation).toBe(operation)
  expect(closed.message).toBe(`shard router is closed: ${operation}() after close()`)
}

describe('ShardRouter', () => {
  describe('after close()', () => {
    it('refuses every statement and health round with a non-retryable ShardingClosedError', async () => {
      const router = createShardRouter({
        shards: [
          { id: 's0', primary: url, replicas: [url] },
          { id: 's1', primary: url },
        ],
        healthCheckInterval: 0,
      })
      await router.close()
      await expectClosed(() => router.query(1, 'SELECT 1'), 'query')
      await expectClosed(() => router.transaction(1, async () => 1), 'transaction')
      await expectClosed(() => router.all('SELECT 1'), 'all')
      await expectClosed(() => router.checkReplicas(), 'checkReplicas')
      // a second close() is a no-op, not an error
      await expect(router.close()).resolves.toBeUndefined()
    })
  })
})

describe('ShardingClosedError', () => {
  it('is in the errors map, and the old RouterClosedError name still catches it', () => {
    expect(errors.ShardingClosedError).toBe(ShardingClosedError)
    const error = new ShardingClosedError('shard router', 'query', { retryable: true } as never)
    expect(error.retryable).toBe(false)
    expect(error).toBeInstanceOf(RouterClosedError)
  })
})
