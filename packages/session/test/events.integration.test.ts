import { captureListenerErrors } from '@ballast/testkit/vitest'
import type { Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import type { SuspicionRaisedEvent } from '../src/index.js'
import { connect, storeOn } from './fixtures.js'

let client: Redis | Cluster
const disposers: (() => Promise<void>)[] = []

beforeAll(async () => {
  client = await connect('standalone')
})
afterEach(async () => {
  vi.restoreAllMocks()
  for (const dispose of disposers.splice(0)) await dispose()
})
afterAll(async () => {
  await client.quit()
})

async function make(options: Parameters<typeof storeOn>[1] = {}) {
  const made = await storeOn(client, options)
  disposers.push(made.dispose)
  return made.store
}

describe('SessionStore events', () => {
  it('a throwing listener fails neither the operation nor the listeners after it; its error is rethrown in a microtask', async () => {
    const store = await make()
    const rethrown = captureListenerErrors()
    const bug = new Error('metrics listener bug')
    const seen: string[] = []
    for (const event of ['created', 'regenerated', 'destroyed', 'expired'] as const) {
      store.on(event, () => {
        throw bug
      })
      store.on(event, () => seen.push(event))
    }
    const created = await store.create({ userId: 'u1' })
    const regenerated = await store.regenerate(created.id)
    expect(await store.destroy(regenerated.id)).toBe(true)
    const session = await store.loadRequest({ cookie: `${store.cookieName}=${regenerated.token}` })
    expect(session.isNew).toBe(true)
    expect(seen).toEqual(['created', 'created', 'regenerated', 'destroyed', 'expired'])
    await vi.waitFor(() => expect(rethrown).toEqual([bug, bug, bug, bug, bug]))
  })

  it('a throwing suspicion-raised listener does not make loadRequest or redeemTicket reject', async () => {
    const store = await make({ ticketOrigins: ['https://pay.example'] })
    const rethrown = captureListenerErrors()
    const raised: SuspicionRaisedEvent[] = []
    store.on('suspicion-raised', () => {
      throw new Error('alerting bug')
    })
    store.on('suspicion-raised', (event) => raised.push(event))
    const session = await store.loadRequest({
      cookie: `${store.cookieName}=forged`,
      ip: '10.0.0.9',
    })
    expect(session.isNew).toBe(true)
    expect(await store.redeemTicket('forged', { origin: 'https://pay.example' })).toBeUndefined()
    expect(raised).toEqual([
      { reason: 'malformed', idHash: undefined, ip: '10.0.0.9' },
      { reason: 'ticket-malformed', idHash: undefined, ip: undefined },
    ])
    await vi.waitFor(() => expect(rethrown).toHaveLength(2))
    expect(store.stats().suspicionsRaised).toBe(2)
    expect(store.stats().ticketsRejected).toBe(1)
  })

  it('on() and once() return a function that removes the listener; off() removes it too', async () => {
    const store = await make()
    const onCreated = vi.fn()
    const onceCreated = vi.fn()
    const offCreated = vi.fn()
    const off = store.on('created', onCreated)
    store.once('created', onceCreated)
    store.on('created', offCreated)
    store.off('created', offCreated)
    await store.create()
    await store.create()
    expect(onCreated).toHaveBeenCalledTimes(2)
    expect(onceCreated).toHaveBeenCalledTimes(1)
    expect(onceCreated.mock.calls[0]![0]).toEqual({ idHash: expect.any(String), userId: undefined })
    expect(offCreated).not.toHaveBeenCalled()
    off()
    off()
    const removedBeforeItRan = vi.fn()
    store.once('created', removedBeforeItRan)()
    await store.create()
    expect(onCreated).toHaveBeenCalledTimes(2)
    expect(removedBeforeItRan).not.toHaveBeenCalled()
  })

  it('counts suspicions whether or not anyone listens', async () => {
    const store = await make()
    await store.loadRequest({ cookie: `${store.cookieName}=${'x'.repeat(87)}` })
    expect(store.stats().suspicionsRaised).toBe(1)
  })
})
