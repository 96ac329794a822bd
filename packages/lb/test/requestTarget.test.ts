import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { InvalidRequestError } from '../src/index.js'
import {
  byPrecedence,
  connectionTokens,
  matchRoute,
  normalizePath,
  type ParsedHost,
  parseHost,
  parseRequestTarget,
  type RequestTarget,
} from '../src/internal/requestTarget.js'
import { responseCacheKey } from '../src/responseCache.js'

const FUZZ = { numRuns: 2000, seed: 15 }

/** Returns the value, or `undefined` when the parser refused the input with its typed error. */
function attempt<T>(parse: () => T): T | undefined {
  try {
    return parse()
  } catch (error) {
    // Anything but the typed error fails the property.
    expect(error).toBeInstanceOf(InvalidRequestError)
    expect((error as InvalidRequestError).code).toBe('E_LB_INVALID_REQUEST')
    return undefined
  }
}

// Strings biased towards what matters at the edge: separators, dots, encodings, brackets, ports.
const hostChar = fc.constantFrom(
  ...'abcXYZ019-._~:[]/@%? \t\\#;,'.split(''),
  '\u0000',
  '\u00ff',
  '\u00e9',
)
const hostBytes = fc.oneof(
  fc.string({ unit: hostChar, maxLength: 24 }),
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc
    .tuple(fc.domain(), fc.option(fc.integer({ min: 0, max: 99_999 })))
    .map(([d, p]) => (p === null ? d : `${d}:${p}`)),
  fc.ipV6().map((ip) => `[${ip}]`),
)

const targetPiece = fc.constantFrom(
  '/',
  '//',
  '.',
  '..',
  '%2e',
  '%2E',
  '%2f',
  '%5c',
  '%5f',
  '%25',
  '%',
  '%zz',
  '%00',
  ';',
  ';x',
  '?',
  '#',
  '\\',
  ' ',
  'api',
  'api/x',
  '_internal',
  'x',
  'http://h',
  'HTTP://H:80',
  'http://evil',
  '\u00e9',
  '~',
  '@',
  ':',
)
const target = fc.oneof(
  fc.array(targetPiece, { maxLength: 12 }).map((parts) => parts.join('')),
  fc.array(targetPiece, { maxLength: 12 }).map((parts) => `/${parts.join('')}`),
  fc.string({ unit: 'binary', maxLength: 30 }).map((s) => `/${s}`),
  fc.webUrl({ withQueryParameters: true }),
)

const HOST: ParsedHost = { name: 'h', authority: 'h' }

const ROUTES = [
  { name: 'internal', host: undefined, wildcard: false, prefix: '/_internal' },
  { name: 'api', host: undefined, wildcard: false, prefix: '/api' },
  { name: 'api-x', host: undefined, wildcard: false, prefix: '/api/x' },
  { name: 'rest', host: undefined, wildcard: false, prefix: '/' },
].sort(byPrecedence)

describe('parseHost', () => {
  it('accepts any bytes only as a valid host[:port], normalised and stable, else refuses with InvalidRequestError', () => {
    fc.assert(
      fc.property(hostBytes, (raw) => {
        const host = attempt(() => parseHost(raw))
        if (host === undefined) return
        expect(host.authority).toMatch(
          /^(?:[a-z0-9_~-]+(?:\.[a-z0-9_~-]+)*|\[[0-9a-f:.]+\])(?::(?:[0-9]{1,5}))?$/,
        )
        expect(host.authority.startsWith(host.name)).toBe(true)
        expect(parseHost(host.authority)).toEqual(host)
      }),
      FUZZ,
    )
  })

  it('answers from its one remembered Host only for the very same bytes, whatever came before', () => {
    // Variants of one host that differ in case, port, trailing dot or validity, parsed in any order.
    const variant = fc.constantFrom(
      'shop.test',
      'Shop.Test',
      'shop.test:8080',
      'shop.test:08080',
      'shop.test:8081',
      'shop.test.',
      'shop.test/x',
      '[::1]:8080',
      '[::1]:8081',
      'a@shop.test',
    )
    const fresh = (raw: string) => {
      parseHost('memo.reset') // forget the last Host, so the next parse runs the full parser
      return attempt(() => parseHost(raw))
    }
    fc.assert(
      fc.property(fc.array(variant, { minLength: 1, maxLength: 12 }), (sequence) => {
        const expected = sequence.map(fresh)
        const seen = sequence.map((raw) => attempt(() => parseHost(raw)))
        expect(seen).toEqual(expected)
      }),
      { numRuns: 300, seed: 15 },
    )
  })

  it('refuses the Host values that once poisoned the cache or split routing', () => {
    for (const raw of ['shop.test/x', 'shop.test:80/x', 'a@b', 'a b', 'x:65536', '', '[::1', '.x'])
      expect(() => parseHost(raw), raw).toThrow(InvalidRequestError)
    expect(parseHost('Shop.Test.:0080')).toEqual({ name: 'shop.test', authority: 'shop.test:80' })
    expect(parseHost('[::1]:8080')).toEqual({ name: '[::1]', authority: '[::1]:8080' })
  })
})

describe('responseCacheKey', () => {
  const part = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('/', '?', '"', ',', '\\'))
  const tuple = fc.tuple(
    fc.constantFrom('GET', 'HEAD', 'GET '),
    fc.option(part, { nil: undefined }),
    part,
    fc.option(part, { nil: undefined }),
  )

  it('gives two requests one key only when method, host, path and query are all equal', () => {
    fc.assert(
      fc.property(tuple, tuple, (a, b) => {
        const same = a.every((v, i) => v === b[i])
        expect(responseCacheKey(...a) === responseCacheKey(...b)).toBe(same)
      }),
      FUZZ,
    )
  })

  it('never lets a Host with a path collide with another request, from raw header and target', () => {
    const keyOf = (rawHost: string, rawTarget: string) => {
      const host = attempt(() => parseHost(rawHost))
      if (host === undefined) return undefined
      const t = attempt(() => parseRequestTarget(rawTarget, host))
      if (t === undefined) return undefined
      return { key: responseCacheKey('GET', host.authority, t.path, t.query), host, t }
    }
    fc.assert(
      fc.property(hostBytes, target, hostBytes, target, (h1, t1, h2, t2) => {
        const a = keyOf(h1, t1)
        const b = keyOf(h2, t2)
        if (a === undefined || b === undefined) return
        const same =
          a.host.authority === b.host.authority && a.t.path === b.t.path && a.t.query === b.t.query
        expect(a.key === b.key).toBe(same)
      }),
      FUZZ,
    )
    // The attack of issue #15: GET /b with Host shop.test/x must not be GET /x/b on shop.test.
    expect(keyOf('shop.test/x', '/b')).toBeUndefined()
  })
})

describe('parseRequestTarget', () => {
  it('either refuses a target with InvalidRequestError or routes its normalised path inside the matched prefix', () => {
    fc.assert(
      fc.property(target, (raw) => {
        const t: RequestTarget | undefined = attempt(() => parseRequestTarget(raw, HOST))
        if (t === undefined) return
        const { path } = t
        expect(path.startsWith('/')).toBe(true)
        // Normal form: nothing left to resolve, and an upstream's URL parser (WHATWG) sees
        // exactly this path, so what was routed is what is served.
        expect(normalizePath(path)).toBe(path)
        expect(path).not.toMatch(/\/\/|\/\.\.?(\/|$)|%2e|%2f|%5c|\\/i)
        expect(new URL(path, 'http://h').pathname).toBe(path)
        const route = matchRoute(ROUTES, 'h', path)!
        expect(route).toBeDefined()
        expect(
          route.prefix === '/' || path === route.prefix || path.startsWith(`${route.prefix}/`),
        ).toBe(true)
        // The most specific prefix wins: no longer prefix also contains the path.
        for (const other of ROUTES)
          if (other.prefix.length > route.prefix.length)
            expect(path === other.prefix || path.startsWith(`${other.prefix}/`)).toBe(false)
      }),
      FUZZ,
    )
  })

  it('routes the targets of issue #15 to the route that owns them, or refuses them', () => {
    const routeOf = (raw: string) =>
      matchRoute(ROUTES, 'h', parseRequestTarget(raw, HOST).path)?.name
    expect(routeOf('/./_internal/x')).toBe('internal')
    expect(routeOf('/%2e/_internal/x')).toBe('internal')
    expect(routeOf('/api/%2E%2E/_internal/x')).toBe('internal')
    expect(routeOf('http://h/_internal/x')).toBe('internal')
    expect(routeOf('/api/./x/../x/y')).toBe('api-x')
    expect(routeOf('/apix')).toBe('rest')
    for (const raw of ['http://x/_internal/x', '/../_internal', '/api/%2f..', '*', 'api', '/a#b'])
      expect(() => parseRequestTarget(raw, HOST), raw).toThrow(InvalidRequestError)
    expect(parseRequestTarget('/a/%7e%41%3a%c3%a9?q=%2e', HOST)).toEqual({
      path: '/a/~A%3A%C3%A9',
      query: 'q=%2e',
    })
  })
})

describe('connectionTokens', () => {
  const name = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9-]{0,12}$/)

  it('marks a header as listed only when its exact name is a token', () => {
    fc.assert(
      fc.property(
        fc.array(name, { maxLength: 6 }),
        fc.array(fc.constantFrom('', ' ', '\t', '  '), { minLength: 12, maxLength: 12 }),
        name,
        (tokens, spaces, candidate) => {
          const header = tokens.map((t, i) => `${spaces[i]}${t}${spaces[i + 6]}`).join(',')
          const listed = connectionTokens(header)
          const lower = tokens.map((t) => t.toLowerCase())
          // Substrings and superstrings of a token are the cases the old code got wrong.
          for (const probe of [
            candidate,
            ...lower,
            ...lower.map((t) => `${t}x`),
            ...lower.map((t) => t.slice(1)),
          ]) {
            const p = probe.toLowerCase()
            const expected = lower.includes(p) && p !== 'close' && p !== 'keep-alive'
            expect(listed?.has(p) ?? false).toBe(expected)
          }
        },
      ),
      FUZZ,
    )
    expect(connectionTokens('close, x-set-cookie-hint')?.has('set-cookie')).toBe(false)
    expect(connectionTokens(['close', 'X-A'])).toEqual(new Set(['x-a']))
  })
})
