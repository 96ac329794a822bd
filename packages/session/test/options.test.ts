import type { IncomingMessage, ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { DEFAULT_EXPRESS_SESSION_OPTIONS, expressSession } from '../src/express.js'
import { DEFAULT_FASTIFY_SESSION_OPTIONS, fastifySession } from '../src/fastify.js'
import { DEFAULT_HTTP_SESSION_OPTIONS, httpAttachSession, httpSession } from '../src/http.js'
import {
  createSessionStore,
  DEFAULT_SESSION_COOKIE_OPTIONS,
  DEFAULT_SESSION_STORE_OPTIONS,
  InvalidArgumentError,
  type SessionStoreOptions,
} from '../src/index.js'
import { SECRET } from './fixtures.js'

// A client that never connects: option checks happen before any I/O, and a request without a
// cookie makes no Redis call.
const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false })
afterAll(() => redis.disconnect())

function thrown(fn: () => unknown): InvalidArgumentError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError)
    return error as InvalidArgumentError
  }
  throw new Error('expected an InvalidArgumentError')
}

/** The Set-Cookie header of a fresh session a store would send (no Redis call). */
async function freshCookie(options: Partial<SessionStoreOptions>): Promise<string | undefined> {
  const store = createSessionStore({ redis, secrets: SECRET, saveUninitialized: true, ...options })
  const session = await store.loadRequest({})
  return session.setCookieHeader()
}

describe('createSessionStore options', () => {
  it('names the option, the expectation and the value on bad input', () => {
    expect(
      thrown(() => createSessionStore({ redis, secrets: SECRET, idleTimeout: -5 })).message,
    ).toBe(
      `invalid option "idleTimeout": expected a positive duration (milliseconds, or a string such as '250ms', '30s', '15m'), got -5`,
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, idleTimeout: '2h', absoluteTimeout: '1h' }),
    ).toThrow(
      'invalid option "idleTimeout": expected at most "absoluteTimeout" (3600000 ms), got "2h"',
    )
    // Connection options passed instead of a client: the message does not show the password.
    const settings = { host: '127.0.0.1', password: 'hunter2' } as unknown as Redis
    expect(() => createSessionStore({ redis: settings, secrets: SECRET })).toThrow(
      'invalid option "redis": expected an ioredis Redis or Cluster client, got an object without evalsha()',
    )
    expect(() => createSessionStore({ redis, secrets: SECRET, prefix: 'a{b}' })).toThrow(
      'invalid option "prefix": expected a string without braces, got "a{b}"',
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, ticketOrigins: ['https://a.test', 'nope'] }),
    ).toThrow(
      `invalid option "ticketOrigins[1]": expected an origin such as 'https://shop.example', got "nope"`,
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, cookie: { sameSite: 'none', secure: false } }),
    ).toThrow('invalid option "cookie.sameSite"')
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, cookie: { sameSite: 'loose' as 'lax' } }),
    ).toThrow(
      `invalid option "cookie.sameSite": expected one of "lax", "strict", "none", got "loose"`,
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, cookie: { path: 'x; Secure' } }),
    ).toThrow(`invalid option "cookie.path": expected a path starting with '/', got "x; Secure"`)
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, cookie: { domain: 'a.test; HttpOnly' } }),
    ).toThrow('invalid option "cookie.domain"')
    expect(() => createSessionStore({ redis, secrets: SECRET, maxSessionsPerUser: -1 })).toThrow(
      'invalid option "maxSessionsPerUser": expected an integer >= 0, got -1',
    )
    expect(() =>
      createSessionStore({ redis, secrets: SECRET, bearer: 'yes' as unknown as boolean }),
    ).toThrow('invalid option "bearer": expected a boolean, got "yes"')
  })

  it('refuses a duration string with no unit, or one it cannot read, naming the option', () => {
    for (const [option, value] of [
      ['idleTimeout', '30'],
      ['absoluteTimeout', 'soon'],
      ['ticketTtl', '0s'],
      ['timeout', '-1s'],
    ] as const) {
      const error = thrown(() =>
        createSessionStore({ redis, secrets: SECRET, [option]: value as '1s' }),
      )
      expect(error.code).toBe('E_SESSION_INVALID_ARGUMENT')
      expect(error.message).toContain(`invalid option "${option}"`)
      expect(error.message).toContain(`got "${value}"`)
    }
    // Zero is the timeout's "wait as long as the client does", and no other duration's.
    expect(() => createSessionStore({ redis, secrets: SECRET, timeout: 0 })).not.toThrow()
    expect(() => createSessionStore({ redis, secrets: SECRET, ticketTtl: 0 })).toThrow(
      'invalid option "ticketTtl"',
    )
  })

  it('reads durations in milliseconds or with a unit', async () => {
    const persistent = { persistent: true, secure: false }
    expect(await freshCookie({ absoluteTimeout: '2h', cookie: persistent })).toContain(
      'Max-Age=7200;',
    )
    expect(
      await freshCookie({ absoluteTimeout: 90_000, idleTimeout: '1m', cookie: persistent }),
    ).toContain('Max-Age=90;')
  })

  it('never shows a secret or an encryption key in its message', () => {
    const short = 'not-long-enough-secret'
    const secrets = [thrown(() => createSessionStore({ redis, secrets: short })).message]
    secrets.push(thrown(() => createSessionStore({ redis, secrets: [SECRET, short] })).message)
    expect(secrets).toEqual([
      'invalid option "secrets": expected one or more strings of at least 32 characters, got a string of 22 characters',
      'invalid option "secrets[1]": expected a string of at least 32 characters, got a string of 22 characters',
    ])
    const key = thrown(() =>
      createSessionStore({ redis, secrets: SECRET, encryptionKeys: ['too-short-key'] }),
    ).message
    expect(key).toBe(
      'invalid option "encryptionKeys[0]": expected a 32-byte key (a Buffer, 64 hex or 43-44 base64 characters), got a string of 13 characters',
    )
    expect(thrown(() => createSessionStore({ redis, secrets: [] })).message).toBe(
      'invalid option "secrets": expected one or more strings of at least 32 characters, got an empty array',
    )
    const inObject = { primary: SECRET } as unknown as string
    expect(thrown(() => createSessionStore({ redis, secrets: inObject })).message).toBe(
      'invalid option "secrets": expected one or more strings of at least 32 characters, got an object',
    )
  })

  it('keeps the default of an option given as undefined, nested cookie options included', async () => {
    const options: SessionStoreOptions = {
      redis,
      secrets: SECRET,
      idleTimeout: undefined,
      absoluteTimeout: undefined,
      prefix: undefined,
      ticketTtl: undefined,
      timeout: undefined,
      maxSessionsPerUser: undefined,
      ticketOrigins: undefined,
      encryptionKeys: undefined,
      bearer: undefined,
      cookie: { name: undefined, secure: undefined, sameSite: undefined, persistent: true },
    }
    const store = createSessionStore(options)
    expect(store.cookieName).toBe('__Host-sid')
    const cookie = await freshCookie({ ...options, saveUninitialized: undefined })
    expect(cookie).toBeUndefined() // saveUninitialized kept its default, false
    expect(await freshCookie(options)).toMatch(
      /^__Host-sid=[\w-]+\.[\w-]+; Path=\/; Max-Age=43200; HttpOnly; Secure; SameSite=Lax$/,
    )
  })

  it('exports frozen defaults that match what it does', () => {
    expect(Object.isFrozen(DEFAULT_SESSION_STORE_OPTIONS)).toBe(true)
    expect(Object.isFrozen(DEFAULT_SESSION_COOKIE_OPTIONS)).toBe(true)
    expect(DEFAULT_SESSION_STORE_OPTIONS).toEqual({
      idleTimeout: '15m',
      absoluteTimeout: '12h',
      prefix: 'sess:',
      maxSessionsPerUser: 0,
      ticketOrigins: [],
      ticketTtl: '60s',
      encryptionKeys: [],
      cookie: DEFAULT_SESSION_COOKIE_OPTIONS,
      bearer: false,
      saveUninitialized: false,
      timeout: '2s',
    })
    expect(DEFAULT_SESSION_COOKIE_OPTIONS).toEqual({
      name: 'sid',
      path: '/',
      secure: true,
      httpOnly: true,
      sameSite: 'lax',
      persistent: false,
      prefix: true,
    })
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

describe('adapter options', () => {
  const store = createSessionStore({ redis, secrets: SECRET })
  const handler = () => {}

  it('export frozen defaults', () => {
    for (const defaults of [
      DEFAULT_HTTP_SESSION_OPTIONS,
      DEFAULT_EXPRESS_SESSION_OPTIONS,
      DEFAULT_FASTIFY_SESSION_OPTIONS,
    ]) {
      expect(Object.isFrozen(defaults)).toBe(true)
      expect(defaults).toEqual({ onUnavailable: undefined })
    }
  })

  it('refuse an onUnavailable that is not a function, at construction', () => {
    const bad = { onUnavailable: 'send 503' as unknown as () => void }
    const message = 'invalid option "onUnavailable": expected a function, got "send 503"'
    expect(thrown(() => httpSession(store, handler, bad)).message).toBe(message)
    expect(thrown(() => expressSession(store, bad)).message).toBe(message)
    expect(thrown(() => fastifySession(store, bad)).message).toBe(message)
  })

  it('take onUnavailable: undefined as not given', async () => {
    expect(() => httpSession(store, handler, { onUnavailable: undefined })).not.toThrow()
    expect(() => expressSession(store, { onUnavailable: undefined })).not.toThrow()
    expect(() => fastifySession(store, { onUnavailable: undefined })).not.toThrow()
    const req = { headers: {}, socket: {} } as IncomingMessage
    const res = { writeHead() {}, end() {} } as unknown as ServerResponse
    const session = await httpAttachSession(store, req, res, { onUnavailable: undefined })
    expect(session?.isNew).toBe(true)
  })
})
