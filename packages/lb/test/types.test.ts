import { describe, expectTypeOf, it } from 'vitest'
import {
  type Balancer,
  createBalancer,
  createHealthChecker,
  type Endpoint,
  type PickedEvent,
} from '../src/index.js'

// Compile-time checks (pnpm typecheck): the generic entry points follow what the caller passes.
describe('types', () => {
  it('a balancer takes the type of its endpoint values, and string ids by default', () => {
    const pools = createBalancer({
      endpoints: [
        { id: 'replica-1', value: { port: 3307 } },
        { id: 'replica-2', value: { port: 3308 }, weight: 2 },
      ],
    })
    expectTypeOf(pools).toEqualTypeOf<Balancer<{ port: number }>>()
    expectTypeOf(pools.pick().value).toEqualTypeOf<{ port: number }>()
    pools.on('picked', (event) => {
      expectTypeOf(event).toEqualTypeOf<PickedEvent<{ port: number }>>()
    })
    const urls = createBalancer({ endpoints: ['http://127.0.0.1:3001'] })
    expectTypeOf(urls.pick()).toEqualTypeOf<Endpoint<string>>()
    void pools.close()
    void urls.close()
  })

  it('a health checker takes the type of its balancer', () => {
    const balancer = createBalancer({ endpoints: [{ id: 'a', value: 7 }] })
    const checker = createHealthChecker({
      balancer,
      interval: '1h',
      check: (endpoint) => {
        expectTypeOf(endpoint.value).toEqualTypeOf<number>()
        return true
      },
    })
    checker.on('checked', ({ endpoint }) => expectTypeOf(endpoint.value).toEqualTypeOf<number>())
    void checker.close()
    void balancer.close()
  })
})
