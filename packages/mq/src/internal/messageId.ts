import { InvalidMessageIdError } from '../errors.js'

/** The most bytes an AMQP `message-id` (a shortstr) holds, and so the inbox column. */
export const MAX_MESSAGE_ID_BYTES = 255

// a lone surrogate (encoded as U+FFFD) or U+FFFD itself (what amqplib decodes invalid UTF-8 to)
const AMBIGUOUS = /[\p{Cs}\uFFFD]/u

/**
 * Checks that a message id can key deduplication: present, non-empty, at most
 * {@link MAX_MESSAGE_ID_BYTES} bytes of UTF-8, and free of U+FFFD and lone surrogates, which
 * stand for bytes that were not UTF-8: two distinct ids on the wire would read the same.
 * @throws {@link InvalidMessageIdError} otherwise.
 */
export function checkMessageId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new InvalidMessageIdError(
      `expected a message id on every message, got ${id === '' ? 'an empty one' : typeof id}`,
    )
  }
  if (AMBIGUOUS.test(id)) {
    throw new InvalidMessageIdError(
      'message id is not well-formed UTF-8 (it has U+FFFD or a lone surrogate), so two distinct ids could read the same',
    )
  }
  const bytes = Buffer.byteLength(id, 'utf8')
  if (bytes > MAX_MESSAGE_ID_BYTES) {
    throw new InvalidMessageIdError(
      `message id of ${bytes} bytes is over the ${MAX_MESSAGE_ID_BYTES} an AMQP message id holds`,
    )
  }
  return id
}
