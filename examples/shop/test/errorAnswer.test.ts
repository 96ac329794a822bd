/**
 * What a shopper's browser (and the gateway, and a load balancer) is told when a handler
 * throws: a failure the libraries mark retryable, as a slot moving to another shard or a
 * shard failing over, is a 503 with Retry-After, not a 500.
 */
import { BreakerOpenError } from '@ballast/resilience'
import {
  InvalidArgumentError,
  ShardUnavailableError,
  SlotMapUnavailableError,
  SlotMovedError,
} from '@ballast/sharding'
import { describe, expect, it } from 'vitest'
import { errorAnswer } from '../src/services/common.js'
import { HttpError } from '../src/web/http.js'

describe('errorAnswer', () => {
  it('answers a retryable library error with 503 and Retry-After', () => {
    for (const error of [
      new SlotMovedError(17, 'a'),
      new SlotMapUnavailableError('the slot map is older than its lease'),
      new ShardUnavailableError('b', 'primary', 'connect ECONNREFUSED'),
      new BreakerOpenError('orders-db'),
    ]) {
      expect(error.retryable, error.name).toBe(true)
      expect(errorAnswer(error), error.name).toEqual({
        status: 503,
        message: 'Busy for a moment; please try again.',
        retryAfter: 1,
      })
    }
  })

  it('keeps 500 for a failure that is not retryable, and an HttpError its own status', () => {
    const internal = { status: 500, message: 'Something went wrong; please try again.' }
    expect(errorAnswer(new InvalidArgumentError('bad shard key'))).toEqual(internal)
    expect(errorAnswer(new Error('boom'))).toEqual(internal)
    expect(errorAnswer(undefined)).toEqual(internal)
    expect(errorAnswer({ retryable: 'yes' })).toEqual(internal)
    expect(errorAnswer(new HttpError(404, 'No such order'))).toEqual({
      status: 404,
      message: 'No such order',
    })
  })
})
