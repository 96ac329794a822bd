import { describe, expect, expectTypeOf, it } from 'vitest'
import { createCache, type TwoLevelCache } from '../src/index.js'

interface Product {
  id: string
  price: bigint
}

// Type-level checks: compiled by `pnpm typecheck`, never called.
function checks(products: TwoLevelCache<Product>, product: Product): void {
  // getOrSet returns the loader's type
  expectTypeOf(products.getOrSet('p:1', async () => product)).toEqualTypeOf<Promise<Product>>()
  expectTypeOf(products.getOrSet('p:1', async () => product as Product | undefined)).toEqualTypeOf<
    Promise<Product | undefined>
  >()
  expectTypeOf(products.getOrSet('p:1', () => product)).toEqualTypeOf<Promise<Product>>()
  // the loader sees its own type as the stale value
  products.getOrSet('p:1', ({ staleValue }) => {
    expectTypeOf(staleValue).toEqualTypeOf<Product | undefined>()
    return product
  })
  // @ts-expect-error a loader of another type than the cache's values
  products.getOrSet('p:1', async () => 42)

  // get, peek and getMany: the cache's type, or a narrower one asked for
  expectTypeOf(products.get('p:1')).toEqualTypeOf<Promise<Product | undefined>>()
  expectTypeOf(products.peek('p:1')).toEqualTypeOf<Product | undefined>()
  expectTypeOf(products.getMany(['p:1'])).toEqualTypeOf<Promise<(Product | undefined)[]>>()

  // getOrSetMany: the batch loader's type; a key it leaves out is undefined
  expectTypeOf(
    products.getOrSetMany(['p:1'], async (keys) => new Map(keys.map((k) => [k, product]))),
  ).toEqualTypeOf<Promise<(Product | undefined)[]>>()

  // without a type parameter: no casts needed
  const mixed = createCache()
  expectTypeOf(mixed.getOrSet('n', () => 1)).toEqualTypeOf<Promise<number>>()
  expectTypeOf(mixed.getOrSet('p', async () => product)).toEqualTypeOf<Promise<Product>>()
  expectTypeOf(mixed.get<Product>('p')).toEqualTypeOf<Promise<Product | undefined>>()
  expectTypeOf(mixed.getOrSetMany(['a'], (keys) => keys.map(() => 'v'))).toEqualTypeOf<
    Promise<(string | undefined)[]>
  >()
  const off = mixed.on('invalidated', ({ origin, keys }) => {
    expectTypeOf(origin).toEqualTypeOf<string>()
    expectTypeOf(keys).toEqualTypeOf<readonly string[] | undefined>()
  })
  expectTypeOf(off).toEqualTypeOf<() => void>()
}

describe('TwoLevelCache types', () => {
  it('follow the caller: getOrSet returns what the loader returns (checked by the type checker)', () => {
    expect(checks).toBeTypeOf('function')
  })
})
