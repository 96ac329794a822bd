/**
 * What a shopper's browser (and the gateway, and a load balancer) is told when a handler
 * throws: a failure the libraries mark retryable, as a slot moving to another shard or a
 * shard failing over, and a transaction MariaDB rolled back in a deadlock, is a 503 with
 * Retry-After, not a 500.
 */
import { BreakerOpenError } from '@ballast/resilience'
import {
  InvalidArgumentError,
  ShardUnavailableError,
  SlotMapUnavailableError,
  SlotMovedError,
} from '@ballast/sharding'
import { mysqlUrl, tempDatabase } from '@ballast/testkit'
import mysql from 'mysql2/promise'
import { describe, expect, it } from 'vitest'
import { errorAnswer } from '../src/services/common.js'
import { HttpError } from '../src/web/http.js'

const busy = { status: 503, message: 'Busy for a moment; please try again.', retryAfter: 1 }

describe('errorAnswer', () => {
  it('answers a retryable library error with 503 and Retry-After', () => {
    for (const error of [
      new SlotMovedError(17, 'a'),
      new SlotMapUnavailableError('the slot map is older than its lease'),
      new ShardUnavailableError('b', 'primary', 'connect ECONNREFUSED'),
      new BreakerOpenError('orders-db'),
    ]) {
      expect(error.retryable, error.name).toBe(true)
      expect(errorAnswer(error), error.name).toEqual(busy)
    }
  })

  it('answers a transaction MariaDB rolled back for another (deadlock, lock wait timeout) with 503', async () => {
    // A real deadlock: two transactions lock two rows in opposite orders.
    const db = await tempDatabase(await mysqlUrl(), 'error_answer')
    const [a, b] = [await mysql.createConnection(db.url), await mysql.createConnection(db.url)]
    try {
      await a.query('CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL)')
      await a.query('INSERT INTO t VALUES (1, 0), (2, 0)')
      await a.query('START TRANSACTION')
      await b.query('START TRANSACTION')
      await a.query('UPDATE t SET n = 1 WHERE id = 1')
      await b.query('UPDATE t SET n = 1 WHERE id = 2')
      const outcomes = await Promise.allSettled([
        a.query('UPDATE t SET n = 2 WHERE id = 2'),
        b.query('UPDATE t SET n = 2 WHERE id = 1'),
      ])
      const failure = outcomes.find((o) => o.status === 'rejected')?.reason
      expect(failure).toMatchObject({ errno: 1213, code: 'ER_LOCK_DEADLOCK' })
      expect(errorAnswer(failure)).toEqual(busy)
    } finally {
      await Promise.all([a.end(), b.end()])
      await db.cleanup()
    }
    expect(
      errorAnswer(Object.assign(new Error('Lock wait timeout exceeded'), { errno: 1205 })),
    ).toEqual(busy)
  })

  it('keeps 500 for a failure that is not retryable, and an HttpError its own status', () => {
    const internal = { status: 500, message: 'Something went wrong; please try again.' }
    expect(errorAnswer(new InvalidArgumentError('bad shard key'))).toEqual(internal)
    expect(errorAnswer(new Error('boom'))).toEqual(internal)
    expect(errorAnswer(undefined)).toEqual(internal)
    expect(errorAnswer({ retryable: 'yes' })).toEqual(internal)
    // Another MariaDB error (a duplicate key) is the request's own.
    expect(errorAnswer(Object.assign(new Error('Duplicate entry'), { errno: 1062 }))).toEqual(
      internal,
    )
    expect(errorAnswer(new HttpError(404, 'No such order'))).toEqual({
      status: 404,
      message: 'No such order',
    })
  })
})
