import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { type Broker, createBroker, InvalidArgumentError, isMqError } from '../src/index.js'
import { redact } from '../src/internal/connection.js'

/** Every password starts with this, so finding the password in a message is never a coincidence. */
const MARK = 'Zq9'

/** The forms a password takes in a URL: as typed, and percent-encoded. */
function forms(password: string): string[] {
  return [password, encodeURIComponent(password)]
}

function leaks(text: string, password: string): boolean {
  return forms(password).some((form) => text.includes(form))
}

/** Builds a broker from `urls`; returns the error, or closes the broker at once (it never connects). */
async function construct(urls: unknown): Promise<unknown> {
  let b: Broker
  try {
    b = createBroker({ urls: urls as string, connectTimeout: 200 })
  } catch (error) {
    return error
  }
  await b.close()
  return undefined
}

describe('createBroker urls', () => {
  const password = `${MARK}s3cret`
  it.each([
    ['a URL of another scheme', `http://user:${password}@rabbit-1:5672`],
    ['an unparseable URL (port out of range)', `amqp://user:${password}@rabbit-1:99999`],
    [
      'a bad URL among good ones',
      ['amqp://guest:guest@rabbit-1', `amqp//user:${password}@rabbit-2`],
    ],
    ['an object instead of a URL', { url: `amqp://user:${password}@rabbit-1` }],
    ['an array holding an object', [{ url: `amqp://user:${password}@rabbit-1` }]],
    ['a URL with the password in its query', `http://rabbit-1/?password=${password}`],
  ])('rejects %s without echoing its password', async (_label, urls) => {
    const error = await construct(urls)
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as Error).message).toContain('"urls"')
    expect(leaks((error as Error).message, password), (error as Error).message).toBe(false)
  })

  it.each([
    ['no "//" (amqplib would connect to localhost as guest)', `amqp:user:${password}@rabbit-1`],
    ['one slash', `amqp:/user:${password}@rabbit-1`],
    ['an empty host', 'amqp://'],
    ['only credentials', `amqps://user:${password}@`],
  ])('rejects a URL without a host: %s', async (_label, urls) => {
    const error = await construct(urls)
    expect(error).toBeInstanceOf(InvalidArgumentError)
    expect((error as Error).message).toContain('"urls"')
    expect(leaks((error as Error).message, password), (error as Error).message).toBe(false)
  })

  it('accepts URLs with a host', async () => {
    for (const urls of [
      'amqp://rabbit-1',
      'amqps://guest:guest@rabbit-1:5671/%2F',
      'amqp://[::1]:5672',
    ]) {
      expect(await construct(urls)).toBeUndefined()
    }
  })

  it('rejects options that are a URL string without echoing its password', () => {
    const run = () => createBroker(`amqp://user:${password}@rabbit-1` as never)
    expect(run).toThrow(InvalidArgumentError)
    expect(run).not.toThrow(password)
  })

  it('redacts a URL whose raw password holds a "/", "?" or "#" (the parser puts it in the path, query or fragment)', () => {
    for (const raw of [`1/${password}`, `1?${password}`, `1#${password}`]) {
      const shown = redact(`amqp://user:${raw}@127.0.0.1:5672/vhost`)
      expect(leaks(shown, raw), shown).toBe(false)
      expect(shown).toBe('amqp://127.0.0.1:5672/vhost')
    }
  })
})

describe('fuzz: urls with a password', () => {
  const passwordArb = fc.string({ unit: 'binary', maxLength: 24 }).map((s) => `${MARK}${s}`)
  const userArb = fc
    .string({ unit: 'binary-ascii', maxLength: 10 })
    .map((s) => s.replace(/[@/?#]/g, ''))
  const urlArb = fc
    .record({
      scheme: fc.constantFrom('amqp', 'amqps', 'http', 'AMQP', 'amqp+tls', ''),
      slashes: fc.constantFrom('//', '', '/', '\\\\'),
      user: userArb,
      password: passwordArb,
      encoded: fc.boolean(),
      host: fc.constantFrom('127.0.0.1', 'rabbit-1', '[::1]', ''),
      port: fc.constantFrom('', ':5672', ':99999', ':x'),
      rest: fc.constantFrom('', '/', '/vhost', '/%2f?heartbeat=5', '#frag'),
      around: fc.constantFrom('', ' ', '\t', '\n'),
    })
    .map((p) => ({
      password: p.password,
      url: `${p.around}${p.scheme}${p.scheme === '' ? '' : ':'}${p.slashes}${p.user}:${p.encoded ? encodeURIComponent(p.password) : p.password}@${p.host}${p.port}${p.rest}${p.around}`,
    }))

  it('redact() never shows the password, in either form', () => {
    fc.assert(
      fc.property(urlArb, ({ url, password }) => {
        const shown = redact(url)
        expect(leaks(shown, password), `${JSON.stringify(url)} -> ${shown}`).toBe(false)
      }),
      { numRuns: 2000, seed: 606 },
    )
  })

  it('createBroker accepts the value or throws InvalidArgumentError, whose message never shows the password', async () => {
    const valueArb = fc.oneof(
      urlArb.map(({ url, password }) => ({ urls: url as unknown, password })),
      fc
        .tuple(urlArb, fc.constantFrom('amqp://127.0.0.1:1', 'bad'))
        .map(([{ url, password }, other]) => ({ urls: [other, url] as unknown, password })),
      urlArb.map(({ url, password }) => ({ urls: { url } as unknown, password })),
      urlArb.map(({ url, password }) => ({ urls: [[url]] as unknown, password })),
    )
    await fc.assert(
      fc.asyncProperty(valueArb, async ({ urls, password }) => {
        const error = await construct(urls)
        if (error === undefined) return
        expect(isMqError(error), String(error)).toBe(true)
        expect(error).toBeInstanceOf(InvalidArgumentError)
        const message = (error as Error).message
        expect(leaks(message, password), message).toBe(false)
      }),
      { numRuns: 150, seed: 607 },
    )
  }, 30_000)
})
