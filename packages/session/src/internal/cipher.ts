import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'

const MARK = '$e1$'

/**
 * AES-256-GCM for session values at rest. The first key encrypts; any key whose id matches
 * decrypts, so keys rotate like cookie secrets. The session id and field name are bound as
 * additional data: a value copied into another session or field fails to decrypt.
 */
export class FieldCipher {
  readonly #keys: Map<string, Buffer>
  readonly #current: { kid: string; key: Buffer }

  constructor(keys: Buffer[]) {
    this.#keys = new Map()
    for (const key of keys) this.#keys.set(kidOf(key), key)
    this.#current = { kid: kidOf(keys[0]!), key: keys[0]! }
  }

  encrypt(plain: string, id: string, field: string): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#current.key, iv)
    cipher.setAAD(Buffer.from(`${id}\0${field}`))
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final(), cipher.getAuthTag()])
    return `${MARK}${this.#current.kid}$${iv.toString('base64url')}$${body.toString('base64url')}`
  }

  /** The plain text, or `undefined` when the value cannot be decrypted with any known key. */
  decrypt(stored: string, id: string, field: string): string | undefined {
    if (!stored.startsWith(MARK)) return stored // written before encryption was enabled
    const [kid, ivText, bodyText] = stored.slice(MARK.length).split('$')
    const key = kid === undefined ? undefined : this.#keys.get(kid)
    if (key === undefined || ivText === undefined || bodyText === undefined) return undefined
    try {
      const body = Buffer.from(bodyText, 'base64url')
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(ivText, 'base64url'))
      decipher.setAAD(Buffer.from(`${id}\0${field}`))
      decipher.setAuthTag(body.subarray(body.length - 16))
      return Buffer.concat([
        decipher.update(body.subarray(0, body.length - 16)),
        decipher.final(),
      ]).toString('utf8')
    } catch {
      return undefined
    }
  }
}

function kidOf(key: Buffer): string {
  return createHash('sha256').update(key).digest('base64url').slice(0, 8)
}
