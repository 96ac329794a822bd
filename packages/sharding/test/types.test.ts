import type { ResultSetHeader } from 'mysql2'
import { describe, expectTypeOf, it } from 'vitest'
import {
  createShardRouter,
  type Row,
  type ScatterResult,
  ShardRouter,
  type ShardTransaction,
} from '../src/index.js'

// Row types as an application writes them: interfaces, with no index signature.
interface OrderRow {
  id: string
  total_cents: number
  created_at: Date
}
interface CountRow {
  n: number
}

// Type checks only (tsc runs them): the closures are never called, so nothing touches a server.
describe('result types', () => {
  const router = {} as ShardRouter

  it('query() returns the result type the caller names, as mysql2 pool.query<T>() does', () => {
    const types = () => {
      expectTypeOf(router.query<OrderRow[]>('u1', 'SELECT * FROM orders')).toEqualTypeOf<
        Promise<OrderRow[]>
      >()
      expectTypeOf(router.query<ResultSetHeader>('u1', 'DELETE FROM orders')).toEqualTypeOf<
        Promise<ResultSetHeader>
      >()
      expectTypeOf(router.query('u1', 'SELECT 1')).toEqualTypeOf<Promise<Row[]>>()
      // A single row is not what a statement resolves to.
      // @ts-expect-error: name the rows (OrderRow[]) or the write's ResultSetHeader
      void router.query<OrderRow>('u1', 'SELECT * FROM orders')
    }
    expectTypeOf(types).toBeFunction()
  })

  it('a transaction types its statements the same way and returns what the callback returns', () => {
    const types = () => {
      expectTypeOf<ShardTransaction['query']>().parameter(0).toEqualTypeOf<string>()
      const committed = router.transaction('u1', async (tx) => {
        expectTypeOf(tx.query<OrderRow[]>('SELECT * FROM orders FOR UPDATE')).toEqualTypeOf<
          Promise<OrderRow[]>
        >()
        expectTypeOf(tx.query<ResultSetHeader>('UPDATE orders SET total_cents = 0')).toEqualTypeOf<
          Promise<ResultSetHeader>
        >()
        return 42 as const
      })
      expectTypeOf(committed).toEqualTypeOf<Promise<42>>()
    }
    expectTypeOf(types).toBeFunction()
  })

  it('all() returns rows of the row type the caller names', () => {
    const types = () => {
      expectTypeOf(router.all<CountRow>('SELECT COUNT(*) AS n FROM orders')).toEqualTypeOf<
        Promise<ScatterResult<CountRow>>
      >()
      expectTypeOf<ScatterResult<CountRow>['rows']>().toEqualTypeOf<CountRow[]>()
      expectTypeOf(router.all('SELECT 1')).toEqualTypeOf<Promise<ScatterResult<Row>>>()
    }
    expectTypeOf(types).toBeFunction()
  })

  it('createShardRouter() returns a ShardRouter; its constructor is private', () => {
    expectTypeOf(createShardRouter).returns.toEqualTypeOf<ShardRouter>()
    const construct = () =>
      // @ts-expect-error: the constructor is private
      new ShardRouter({ shards: [] })
    expectTypeOf(construct).toBeFunction()
  })
})
