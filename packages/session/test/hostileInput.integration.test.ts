import fc from 'fast-check'
import type { Cluster, Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { isSessionError } from '../src/index.js'
import { connect, storeOn } from './fixtures.js'

/** Anything a client can put in a header or a form field, ASCII or not. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 120 }),
  fc.string({ unit: 'grapheme', maxLength: 60 }),
  fc.stringMatching(/^[A-Za-z0-9_.-]{0,100}$/),
)

describe('hostile input on Redis standalone', () => {
  let client: Redis | Cluster
  const disposers: (() => Promise<void>)[] = []
  beforeAll(async () => {
    client = await connect('standalone')
  })
  afterEach(async () => {
    for (const dispose of disposers.splice(0)) await dispose()
  })
  afterAll(async () => {
    await client.quit()
  })
  async function make(options: Parameters<typeof storeOn>[1] = {}) {
    const made = await storeOn(client, options)
    disposers.push(made.dispose)
    return made
  }

  describe('RequestSession.verifyCsrf', () => {
    it('refuses a non-ASCII token of the right length with false, not a RangeError', async () => {
      const { store } = await make()
      const session = await store.loadRequest({})
      const token = session.csrfToken()
      expect(session.verifyCsrf('é'.repeat(token.length))).toBe(false)
      expect(session.verifyCsrf(`${token.slice(0, -1)}é`)).toBe(false)
      expect(session.verifyCsrf(token)).toBe(true)
    })

    it('returns a boolean for any input, true only for the token itself (fuzz)', async () => {
      const { store } = await make()
      const session = await store.loadRequest({})
      const token = session.csrfToken()
      fc.assert(
        fc.property(
          fc.oneof(
            fc.anything(),
            anyText,
            // Exactly as many UTF-16 units as the token, any of them non-ASCII.
            fc
              .array(fc.integer({ min: 0, max: 0xffff }), {
                minLength: token.length,
                maxLength: token.length,
              })
              .map((units) => String.fromCharCode(...units)),
            // The token with one unit changed to anything.
            fc
              .tuple(fc.nat({ max: token.length - 1 }), fc.integer({ min: 0, max: 0xffff }))
              .map(
                ([at, unit]) =>
                  token.slice(0, at) + String.fromCharCode(unit) + token.slice(at + 1),
              ),
          ),
          (given) => {
            expect(session.verifyCsrf(given)).toBe(given === token)
          },
        ),
        { numRuns: 2000, seed: 0xc5f },
      )
      expect(session.verifyCsrf(token)).toBe(true)
    })
  })

  describe('SessionStore.loadRequest', () => {
    it('never reads an id smuggled inside another cookie of the header', async () => {
      const { store } = await make()
      const victim = await store.create({ data: { who: 'victim' } })
      const attacker = await store.create({ data: { who: 'attacker' } })
      const name = store.cookieName
      const smuggled = await store.loadRequest({
        cookie: `x=a ${name}=${attacker.token}; ${name}=${victim.token}`,
      })
      expect(smuggled.data).toEqual({ who: 'victim' })
      const alone = await store.loadRequest({ cookie: `x=a\t${name}=${attacker.token}` })
      expect(alone.isNew).toBe(true)
    })

    it('gives a fresh session for any cookie or bearer header it did not issue (fuzz)', async () => {
      const { store } = await make({ bearer: true })
      const real = await store.create({ data: { who: 'real' } })
      const name = store.cookieName
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            anyText,
            anyText.map((v) => `${name}=${v}`),
            // Inside another cookie's value: no ';', which would make the real pair a pair.
            anyText.map((v) => `a=${v.replaceAll(';', '')} ${name}=${real.token}`),
            // One character changed, added or dropped at the end of the real token.
            anyText
              .filter((v) => !v.startsWith(real.token.slice(-3)))
              .map((v) => `${name}=${real.token.slice(0, -3)}${v}`),
          ),
          fc.option(anyText.map((v) => `Bearer ${v}`)),
          async (cookie, authorization) => {
            const session = await store.loadRequest({
              cookie,
              authorization: authorization ?? undefined,
            })
            expect(session.isNew).toBe(true)
            expect(session.data).toEqual({})
          },
        ),
        { numRuns: 300, seed: 0x5e55 },
      )
      const cookie = `${name}=${real.token}`
      expect((await store.loadRequest({ cookie })).data).toEqual({ who: 'real' })
    })
  })

  describe('SSO tickets', () => {
    const origin = 'https://pay.example'

    it('refuses any string it did not issue, at any origin, without throwing (fuzz)', async () => {
      const { store } = await make({ ticketOrigins: [origin] })
      const user = await store.create({ userId: 'fuzz-user' })
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(anyText, fc.stringMatching(/^[A-Za-z0-9_-]{43}$/)),
          fc.oneof(fc.constant(origin), anyText),
          async (ticket, at) => {
            const redeemed = await store.redeemTicket(ticket, { origin: at }).then(
              (value) => value,
              (error: unknown) => {
                expect(isSessionError(error)).toBe(true)
                return undefined
              },
            )
            expect(redeemed).toBeUndefined()
          },
        ),
        { numRuns: 300, seed: 0x7ec7 },
      )
      expect(store.stats().ticketsRedeemed).toBe(0)
      expect(store.stats().ticketsRejected).toBeGreaterThan(0)
      // The property could fail: an issued ticket is still accepted after the fuzzing.
      const ticket = await store.issueTicket(user.id, { targetOrigin: origin })
      expect((await store.redeemTicket(ticket, { origin }))?.userId).toBe('fuzz-user')
    })

    it('refuses non-string tickets from a request with false', async () => {
      const { store } = await make({ ticketOrigins: [origin] })
      const session = await store.loadRequest({})
      for (const ticket of [undefined, null, 42, ['x'], { toString: () => 'x' }]) {
        expect(await session.redeemTicket(ticket as unknown as string, origin)).toBe(false)
      }
    })
  })
})
