import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createSessionStore, InvalidArgumentError } from '../src/index.js'
import { SECRET } from './fixtures.js'

// A client that never connects: option checks happen before any I/O.
const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false })
afterAll(() => redis.disconnect())

describe('createSessionStore options', () => {
  it('names the option, the expectation and the value on bad input', () => {
    expect(() => createSessionStore({ redis, secrets: 'short' })).toThrow(
      'invalid option "secrets": expected one or more strings of at least 32 characters',
    )
    expect(() => createSessionStore({ redis, secrets: SECRET, idleTimeout: -5 })).toThrow(
      'invalid option "idleTimeout": expected a positive number of milliseconds',
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, idleTimeout: '2h', absoluteTimeout: '1h' }),
    ).toThrow('invalid option "idleTimeout": expected at most "absoluteTimeout"')
    expect(() => createSessionStore({ redis: {} as Redis, secrets: SECRET })).toThrow(
      'invalid option "redis"',
    )
    expect(() => createSessionStore({ redis, secrets: SECRET, prefix: 'a{b}' })).toThrow(
      'invalid option "prefix"',
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, ticketOrigins: ['not an origin'] }),
    ).toThrow('invalid option "ticketOrigins"')
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, encryptionKeys: ['too-short'] }),
    ).toThrow('invalid option "encryptionKeys"')
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, cookie: { sameSite: 'none', secure: false } }),
    ).toThrow('invalid option "cookie.sameSite"')
    expect(() => createSessionStore({ redis, secrets: SECRET, maxSessionsPerUser: -1 })).toThrow(
      InvalidArgumentError,
    )
  })

  it('prefixes the cookie name: __Host- without a domain, __Secure- with one, none without Secure', () => {
    expect(createSessionStore({ redis, secrets: SECRET }).cookieName).toBe('__Host-sid')
    expect(
      createSessionStore({ redis, secrets: SECRET, cookie: { domain: 'shop.example' } }).cookieName,
    ).toBe('__Secure-sid')
    expect(
      createSessionStore({ redis, secrets: SECRET, cookie: { secure: false, name: 'app' } })
        .cookieName,
    ).toBe('app')
  })
})
