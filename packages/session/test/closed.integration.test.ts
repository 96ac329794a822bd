import { rejection } from '@ballast/testkit'
import type { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { errors, isSessionError, SessionClosedError } from '../src/index.js'
import { connect, storeOn } from './fixtures.js'

function expectClosed(error: unknown, operation: string): void {
  expect(error).toBeInstanceOf(SessionClosedError)
  expect(isSessionError(error)).toBe(true)
  const closed = error as SessionClosedError
  expect(closed.code).toBe('E_SESSION_CLOSED')
  expect(closed.retryable).toBe(false)
  expect(closed.operation).toBe(operation)
  expect(closed.message).toBe(`session store is closed: ${operation}() after close()`)
}

let client: Redis | Cluster

beforeAll(async () => {
  client = await connect('standalone')
})
afterAll(async () => {
  await client.quit()
})

describe('SessionStore', () => {
  describe('after close()', () => {
    it('refuses every operation with a non-retryable SessionClosedError, not SessionUnavailableError', async () => {
      const { store, dispose } = await storeOn(client)
      const live = await store.create({ userId: 'u1' })
      const cookie = `${store.cookieName}=${live.token}`
      await store.close()
      const calls: [string, () => Promise<unknown>][] = [
        ['loadRequest', () => store.loadRequest({ cookie })],
        ['create', () => store.create()],
        ['load', () => store.load(live.id)],
        ['save', () => store.save(live.id, { set: { a: 1 } })],
        ['regenerate', () => store.regenerate(live.id)],
        ['destroy', () => store.destroy(live.id)],
        ['listForUser', () => store.listForUser('u1')],
        ['destroyAllForUser', () => store.destroyAllForUser('u1')],
        ['issueTicket', () => store.issueTicket(live.id, { targetOrigin: 'https://b.test' })],
        ['redeemTicket', () => store.redeemTicket('ticket', { origin: 'https://b.test' })],
      ]
      for (const [operation, call] of calls) expectClosed(await rejection(call), operation)
      await dispose()
    })

    it("refuses a request session's operations once its store is closed", async () => {
      const { store, dispose } = await storeOn(client)
      const live = await store.create({ userId: 'u2' })
      const session = await store.loadRequest({ cookie: `${store.cookieName}=${live.token}` })
      await store.close()
      const calls: [string, () => Promise<unknown>][] = [
        ['save', () => session.save()],
        ['commit', () => session.commit()],
        ['regenerate', () => session.regenerate()],
        ['issueTicket', () => session.issueTicket('https://b.test')],
        ['redeemTicket', () => session.redeemTicket('ticket', 'https://b.test')],
        ['destroy', () => session.destroy()],
      ]
      for (const [operation, call] of calls) expectClosed(await rejection(call), operation)
      await dispose()
    })
  })
})

describe('SessionClosedError', () => {
  it('is in the errors map and is never retryable, whatever the options say', () => {
    expect(errors.SessionClosedError).toBe(SessionClosedError)
    expect(new SessionClosedError('session store', 'load', { retryable: true }).retryable).toBe(
      false,
    )
  })
})
