import { captureListenerErrors } from '@ballast/testkit/vitest'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { CausalToken, createShardRouter, type ShardRouter } from '../src/index.js'

// Pools connect lazily: nothing here touches a server.
const url = 'mysql://nobody@127.0.0.1:1/none'
const secrets = ['a-secret-of-at-least-thirty-two-characters']
const routers: ShardRouter[] = []
function router(): ShardRouter {
  const r = createShardRouter({
    shards: [{ id: 's0', primary: url, replicas: [url] }],
    healthCheckInterval: 0,
    secrets,
  })
  routers.push(r)
  return r
}

afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(routers.splice(0).map((r) => r.close()))
})

describe('ShardRouter events', () => {
  it('on() and once() return a function that removes the listener; off() removes one too', () => {
    const r = router()
    const on = vi.fn()
    const once = vi.fn()
    const removed = vi.fn()
    const off = r.on('causal-token-refused', on)
    r.once('causal-token-refused', once)
    r.on('causal-token-refused', removed)
    r.off('causal-token-refused', removed)
    r.verifyCausalToken('not a token')
    r.verifyCausalToken('not a token either')
    expect(on).toHaveBeenCalledTimes(2)
    expect(on).toHaveBeenCalledWith({ reason: 'malformed' })
    expect(once).toHaveBeenCalledTimes(1)
    expect(removed).not.toHaveBeenCalled()
    off()
    r.verifyCausalToken('x')
    expect(on).toHaveBeenCalledTimes(2)
  })

  it('a throwing listener does not break the call that emitted nor the other listeners; its error is rethrown in a microtask', async () => {
    const r = router()
    const boom = new Error('listener bug')
    const rethrown = captureListenerErrors()
    const after = vi.fn()
    r.on('causal-token-refused', () => {
      throw boom
    })
    r.on('causal-token-refused', after)
    expect(r.verifyCausalToken('forged')).toBe(CausalToken.empty)
    expect(after).toHaveBeenCalledTimes(1)
    await vi.waitFor(() => expect(rethrown).toEqual([boom]))
    expect(r.stats().causalTokensRefused).toBe(1)
  })

  it('exposes no emit(): only the router emits its events', () => {
    const r = router()
    expect('emit' in r).toBe(false)
  })
})
