import { EventEmitter } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { Bus } from '../src/internal/bus.js'
import type { RedisClient } from '../src/internal/l2.js'

// The bus's bookkeeping fed directly with messages as the subscriber connection delivers them
// (no server involved: what reaches the handlers is what is under test).

function busFor(channel: string) {
  const subscriber = new EventEmitter()
  const gaps: string[] = []
  const messages: string[] = []
  const bus = new Bus({
    client: {} as RedisClient,
    subscriber: subscriber as unknown as RedisClient,
    channel,
    instanceId: 'self',
    heartbeatInterval: 1000,
    heartbeatTimeout: 3000,
    publish: async () => undefined,
    handlers: {
      message: (message) => messages.push(`${message.o}:${message.s}`),
      gap: (origin) => gaps.push(origin),
      up: () => undefined,
      down: () => undefined,
      rejected: () => undefined,
    },
  })
  const send = (o: string, s: number, t = 'h') =>
    subscriber.emit('message', channel, JSON.stringify({ o, s, t, k: ['x'] }))
  return { bus, send, gaps, messages }
}

describe('Bus', () => {
  let close: (() => Promise<void>) | undefined
  afterEach(async () => {
    await close?.()
  })

  describe('origin tracking', () => {
    it('notices a missed message from a peer after a flood of forged origins', () => {
      const { bus, send, gaps } = busFor('c')
      close = () => bus.close()
      send('peer', 1)
      send('peer', 2)
      for (let i = 0; i < 12_000; i++) send(`forged-${i}`, 1)
      send('peer', 4, 'k') // the peer's message 3 never arrived: its invalidation is lost
      expect(gaps).toContain('peer')
    })

    it('keeps tracking a peer heard from recently while forged origins come and go', () => {
      const { bus, send, gaps } = busFor('c')
      close = () => bus.close()
      let seq = 0
      for (let i = 0; i < 30_000; i++) {
        if (i % 1000 === 0) send('peer', ++seq) // a live peer's heartbeats
        send(`forged-${i}`, 1)
      }
      expect(gaps).toEqual([])
      send('peer', seq + 2, 'k')
      expect(gaps).toEqual(['peer'])
    })

    it('does not count a new peer that starts at its first message as a gap', () => {
      const { bus, send, gaps } = busFor('c')
      close = () => bus.close()
      for (let i = 0; i < 12_000; i++) send(`forged-${i}`, 1)
      send('newcomer', 1)
      send('newcomer', 2, 'k')
      expect(gaps).toEqual([])
    })
  })
})
