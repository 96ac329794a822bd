import { describe, expect, it } from 'vitest'
import { disposables } from '../src/index.js'

describe('disposables', () => {
  it('runs clean-ups newest first, through each resource’s own release method', async () => {
    const order: string[] = []
    const bin = disposables()
    bin.defer(() => order.push('deferred'))
    const proxy = bin.use({ close: async () => order.push('close') })
    bin.use({ disconnect: () => order.push('disconnect'), quit: () => order.push('quit') })
    bin.use({ cleanup: () => order.push('cleanup'), close: () => order.push('not this') })
    expect(proxy).toHaveProperty('close')
    await bin.cleanup()
    expect(order).toEqual(['cleanup', 'disconnect', 'close', 'deferred'])
    await bin.cleanup()
    expect(order).toHaveLength(4)
  })

  it('runs every clean-up even when some fail, then reports the failures', async () => {
    const ran: number[] = []
    const bin = disposables()
    bin.defer(() => ran.push(1))
    bin.defer(() => {
      throw new Error('first')
    })
    bin.defer(async () => {
      throw new Error('second')
    })
    const error = await bin.cleanup().catch((e: unknown) => e)
    expect(ran).toEqual([1])
    expect(error).toBeInstanceOf(AggregateError)
    expect((error as AggregateError).errors.map((e: Error) => e.message)).toEqual([
      'second',
      'first',
    ])
  })

  it('refuses something it cannot release', () => {
    expect(() => disposables().use({} as never)).toThrow(/expected a resource/)
  })
})
