import { afterEach, describe, expect, it, vi } from 'vitest'
import { Emitter } from '../src/index.js'

interface Events {
  opened: { name: string }
  'half-opened': { name: string; at: number }
}

describe('Emitter', () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('calls listeners with the one payload object, in the order they were added', () => {
    const events = new Emitter<Events>()
    const seen: string[] = []
    events.on('opened', ({ name }) => seen.push(`a:${name}`))
    events.on('opened', ({ name }) => seen.push(`b:${name}`))
    events.emit('opened', { name: 'payments' })
    expect(seen).toEqual(['a:payments', 'b:payments'])
  })

  it('on() returns a function that removes the listener, and calling it twice does nothing', () => {
    const events = new Emitter<Events>()
    const listener = vi.fn()
    const off = events.on('opened', listener)
    off()
    off()
    events.emit('opened', { name: 'x' })
    expect(listener).not.toHaveBeenCalled()
    expect(events.has('opened')).toBe(false)
  })

  it('once() calls a listener once, and its unsubscribe and off() remove it before it ran', () => {
    const events = new Emitter<Events>()
    const once = vi.fn()
    events.once('opened', once)
    events.emit('opened', { name: 'a' })
    events.emit('opened', { name: 'b' })
    expect(once).toHaveBeenCalledTimes(1)
    expect(once).toHaveBeenCalledWith({ name: 'a' })

    const unsubscribed = vi.fn()
    events.once('opened', unsubscribed)()
    const removed = vi.fn()
    events.once('opened', removed)
    events.off('opened', removed)
    events.emit('opened', { name: 'c' })
    expect(unsubscribed).not.toHaveBeenCalled()
    expect(removed).not.toHaveBeenCalled()
    expect(events.has('opened')).toBe(false)
  })

  it('a throwing listener breaks neither emit() nor the listeners after it; its error is rethrown in a microtask', async () => {
    const events = new Emitter<Events>()
    const boom = new Error('listener bug')
    const rethrown: unknown[] = []
    const queue = vi.spyOn(globalThis, 'queueMicrotask').mockImplementation((task) => {
      try {
        task()
      } catch (error) {
        rethrown.push(error)
      }
    })
    const after = vi.fn()
    events.on('opened', () => {
      throw boom
    })
    events.on('opened', after)
    expect(() => events.emit('opened', { name: 'x' })).not.toThrow()
    expect(after).toHaveBeenCalledTimes(1)
    expect(queue).toHaveBeenCalledTimes(1)
    expect(rethrown).toEqual([boom])
  })

  it('has() and listenerCount() report listeners per event, and removeAllListeners() clears them', () => {
    const events = new Emitter<Events>()
    expect(events.has('opened')).toBe(false)
    events.on('opened', () => {})
    events.on('half-opened', () => {})
    events.on('half-opened', () => {})
    expect(events.listenerCount('half-opened')).toBe(2)
    events.removeAllListeners('half-opened')
    expect(events.has('half-opened')).toBe(false)
    expect(events.has('opened')).toBe(true)
    events.removeAllListeners()
    expect(events.has('opened')).toBe(false)
  })

  it('refuses a listener that is not a function', () => {
    const events = new Emitter<Events>()
    expect(() => events.on('opened', 'nope' as never)).toThrow(/expected a function/)
  })

  it('does not warn about many listeners on one event', () => {
    const events = new Emitter<Events>()
    const warn = vi.spyOn(process, 'emitWarning')
    for (let i = 0; i < 50; i++) events.on('opened', () => {})
    expect(warn).not.toHaveBeenCalled()
  })
})

describe('Emitter.has', () => {
  it('follows every way a listener comes and goes', () => {
    const events = new Emitter<Events>()
    const a = () => {}
    const b = () => {}
    events.on('opened', a)
    events.on('opened', b)
    events.off('opened', a)
    expect(events.has('opened')).toBe(true)
    events.off('opened', b)
    expect(events.has('opened')).toBe(false)
    events.off('opened', b) // removing what is not there changes nothing
    expect(events.has('opened')).toBe(false)

    events.once('opened', a)
    events.on('opened', b)
    events.emit('opened', { name: 'x' }) // the once listener goes, b stays
    expect(events.has('opened')).toBe(true)
    events.off('opened', b)
    expect(events.has('opened')).toBe(false)

    events.once('half-opened', a)
    events.emit('half-opened', { name: 'x', at: 1 })
    expect(events.has('half-opened')).toBe(false)

    const off = events.on('opened', a)
    events.on('half-opened', b)
    off()
    expect(events.has('opened')).toBe(false)
    events.removeAllListeners()
    expect(events.has('half-opened')).toBe(false)
    events.on('opened', a)
    expect(events.has('opened')).toBe(true)
  })
})
