import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { ID_LENGTH, isIdShape } from './ids.js'

/** Why a cookie value was refused. */
export type Refusal = 'malformed' | 'bad-signature'

const SIG_LENGTH = 43
const VALUE_LENGTH = ID_LENGTH + 1 + SIG_LENGTH
const SIG_SHAPE = /^[A-Za-z0-9_-]{43}$/

/**
 * Signs ids with HMAC-SHA256: the first secret signs, any secret verifies, so a secret can be
 * rotated in by putting it first and rotated out later by removing it.
 */
export class Signer {
  readonly #secrets: string[]
  readonly #logKey: Buffer

  constructor(secrets: string[]) {
    this.#secrets = secrets
    // Logs carry a keyed hash of the id: stable across instances, useless to an attacker.
    this.#logKey = createHash('sha256').update('ballast-session-log\0').update(secrets[0]!).digest()
  }

  sign(id: string): string {
    return `${id}.${this.#mac(this.#secrets[0]!, id)}`
  }

  /** The id inside a signed value, or why it is refused. Never touches the network. */
  unsign(value: string): { id: string } | { refused: Refusal } {
    if (value.length !== VALUE_LENGTH || value.charCodeAt(ID_LENGTH) !== 46 /* . */) {
      return { refused: 'malformed' }
    }
    const id = value.slice(0, ID_LENGTH)
    const sig = value.slice(ID_LENGTH + 1)
    if (!isIdShape(id) || !SIG_SHAPE.test(sig)) return { refused: 'malformed' }
    // Compare the text, not decoded bytes: base64url's last character carries two spare
    // bits, so several spellings decode alike and a tampered one must still be refused.
    const given = Buffer.from(sig, 'latin1')
    for (const secret of this.#secrets) {
      const expected = Buffer.from(this.#mac(secret, id), 'latin1')
      if (timingSafeEqual(expected, given)) return { id }
    }
    return { refused: 'bad-signature' }
  }

  /** A short keyed hash of an id, safe for logs and events. */
  hash(id: string): string {
    return createHmac('sha256', this.#logKey).update(id).digest('base64url').slice(0, 16)
  }

  #mac(secret: string, id: string): string {
    return createHmac('sha256', secret).update(id).digest('base64url')
  }
}
