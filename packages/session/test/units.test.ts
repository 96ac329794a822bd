import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FieldCipher } from '../src/internal/cipher.js'
import { readCookie, serializeCookie } from '../src/internal/cookies.js'
import { isIdShape, newId } from '../src/internal/ids.js'
import { Signer } from '../src/internal/signer.js'
import { OLD_SECRET, SECRET } from './fixtures.js'

describe('ids', () => {
  it('are 256 bits of base64url and never repeat', () => {
    const seen = new Set<string>()
    for (let i = 0; i < 10_000; i++) {
      const id = newId()
      expect(isIdShape(id)).toBe(true)
      expect(Buffer.from(id, 'base64url')).toHaveLength(32)
      seen.add(id)
    }
    expect(seen.size).toBe(10_000)
  })
})

describe('Signer', () => {
  const signer = new Signer([SECRET])

  it('accepts what it signed, with the first secret or any later one', () => {
    const id = newId()
    expect(signer.unsign(signer.sign(id))).toEqual({ id })
    const rotated = new Signer(['a-brand-new-secret-0123456789-abcdef', SECRET])
    expect(rotated.unsign(signer.sign(id))).toEqual({ id })
  })

  it('refuses a value signed by a secret that was rotated out', () => {
    const id = newId()
    const old = new Signer([OLD_SECRET])
    expect(signer.unsign(old.sign(id))).toEqual({ refused: 'bad-signature' })
  })

  it('refuses every single-character change of a signed value', () => {
    const value = signer.sign(newId())
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: value.length - 1 }),
        fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.'),
        (at, char) => {
          fc.pre(value[at] !== char)
          const forged = value.slice(0, at) + char + value.slice(at + 1)
          expect('refused' in signer.unsign(forged)).toBe(true)
        },
      ),
      { numRuns: 2000 },
    )
  })

  it('refuses arbitrary strings as malformed or forged, never as an id', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (value) => {
        expect('refused' in signer.unsign(value)).toBe(true)
      }),
    )
  })

  it('hashes ids for logs: stable, short and not the id', () => {
    const id = newId()
    expect(signer.hash(id)).toBe(new Signer([SECRET]).hash(id))
    expect(signer.hash(id)).toHaveLength(16)
    expect(id).not.toContain(signer.hash(id))
  })
})

describe('cookies', () => {
  const spec = {
    name: '__Host-sid',
    domain: undefined,
    path: '/',
    secure: true,
    httpOnly: true,
    sameSite: 'lax' as const,
    persistent: false,
  }

  it('finds one cookie among others, only at the start of a pair', () => {
    expect(readCookie('a=1; __Host-sid=abc; b=2', '__Host-sid')).toBe('abc')
    expect(readCookie('x__Host-sid=no; __Host-sid=yes', '__Host-sid')).toBe('yes')
    expect(readCookie('__Host-sid="quoted"', '__Host-sid')).toBe('quoted')
    expect(readCookie('a=1', '__Host-sid')).toBeUndefined()
    expect(readCookie(undefined, '__Host-sid')).toBeUndefined()
  })

  it("never reads a cookie smuggled inside another cookie's value (space or tab)", () => {
    expect(readCookie('x=a __Host-sid=ATTACKER; __Host-sid=VICTIM', '__Host-sid')).toBe('VICTIM')
    expect(readCookie('x=a\t__Host-sid=ATTACKER; __Host-sid=VICTIM', '__Host-sid')).toBe('VICTIM')
    expect(readCookie('x=a __Host-sid=ATTACKER', '__Host-sid')).toBeUndefined()
    expect(readCookie('x="__Host-sid=ATTACKER"', '__Host-sid')).toBeUndefined()
  })

  it('takes the first of two cookies of the same name, as browsers order them', () => {
    // Browsers send the longer path (and, for equal paths, the earlier created) first.
    expect(readCookie('__Host-sid=first; __Host-sid=second', '__Host-sid')).toBe('first')
    expect(readCookie(' __Host-sid = spaced ;a=1', '__Host-sid')).toBe('spaced')
  })

  describe('for any Cookie header (fuzz)', () => {
    const NAME = '__Host-sid'
    // Names and values without the pair separator, including ones that spell the name.
    const text = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 20 }),
      fc.constantFrom(NAME, ` ${NAME}`, `\t${NAME}`, `x${NAME}`, `${NAME}=evil`, `a ${NAME}=evil`),
    )
    const pair = fc
      .tuple(text, fc.constantFrom('=', '= ', ' = ', ''), text)
      .map(([name, eq, value]) => `${name}${eq}${value}`.replaceAll(';', ''))
    const trim = (s: string) => s.replace(/^[ \t]+|[ \t]+$/g, '')
    /** RFC 6265: pairs split on ';', the name before the first '=', space and tab trimmed. */
    function reference(header: string): string | undefined {
      for (const part of header.split(';')) {
        const eq = part.indexOf('=')
        if (eq !== -1 && trim(part.slice(0, eq)) === NAME) return trim(part.slice(eq + 1))
      }
      return undefined
    }

    it('never throws, and reads only a pair whose whole name is the cookie name', () => {
      fc.assert(
        fc.property(
          fc.oneof(
            fc.string({ unit: 'binary', maxLength: 300 }),
            fc.array(pair).map((p) => p.join('; ')),
          ),
          (header) => {
            const value = readCookie(header, NAME)
            const expected = reference(header)
            if (expected === undefined) expect(value).toBeUndefined()
            else expect([expected, expected.slice(1, -1)]).toContain(value)
          },
        ),
        { numRuns: 2000, seed: 0x5e55 },
      )
    })

    it('reads the first real pair, whatever other pairs hold', () => {
      fc.assert(
        fc.property(
          fc.array(pair, { maxLength: 8 }),
          fc.array(pair, { maxLength: 8 }),
          fc.stringMatching(/^[A-Za-z0-9_.-]{1,50}$/),
          (before, after, id) => {
            const others = before.filter((p) => reference(p) === undefined)
            const header = [...others, `${NAME}=${id}`, ...after].join('; ')
            expect(readCookie(header, NAME)).toBe(id)
          },
        ),
        { numRuns: 1000, seed: 0x5e56 },
      )
    })
  })

  it('serialises the OWASP defaults: HttpOnly, Secure, SameSite=Lax, Path=/, no Max-Age', () => {
    expect(serializeCookie(spec, 'v')).toBe('__Host-sid=v; Path=/; HttpOnly; Secure; SameSite=Lax')
  })

  it('expires the cookie when there is no value', () => {
    expect(serializeCookie(spec, undefined)).toContain('Max-Age=0')
  })

  it('adds the domain and Max-Age when asked', () => {
    const out = serializeCookie(
      { ...spec, name: '__Secure-sid', domain: 'shop.example', persistent: true },
      'v',
      60_000,
    )
    expect(out).toContain('Domain=shop.example')
    expect(out).toContain('Max-Age=60')
  })
})

describe('FieldCipher', () => {
  const key1 = Buffer.alloc(32, 1)
  const key2 = Buffer.alloc(32, 2)

  it('round-trips and hides the plain text', () => {
    const cipher = new FieldCipher([key1])
    const sealed = cipher.encrypt('{"card":"4111"}', 'id', 'd:x')
    expect(sealed).not.toContain('4111')
    expect(cipher.decrypt(sealed, 'id', 'd:x')).toBe('{"card":"4111"}')
  })

  it('decrypts with a rotated-in key list and fails closed without the key', () => {
    const sealed = new FieldCipher([key1]).encrypt('"v"', 'id', 'd:x')
    expect(new FieldCipher([key2, key1]).decrypt(sealed, 'id', 'd:x')).toBe('"v"')
    expect(new FieldCipher([key2]).decrypt(sealed, 'id', 'd:x')).toBeUndefined()
  })

  it('refuses a value moved to another session or field', () => {
    const cipher = new FieldCipher([key1])
    const sealed = cipher.encrypt('"v"', 'id-a', 'd:x')
    expect(cipher.decrypt(sealed, 'id-b', 'd:x')).toBeUndefined()
    expect(cipher.decrypt(sealed, 'id-a', 'd:y')).toBeUndefined()
  })

  it('reads values written before encryption was enabled', () => {
    expect(new FieldCipher([key1]).decrypt('{"a":1}', 'id', 'd:x')).toBe('{"a":1}')
  })
})
