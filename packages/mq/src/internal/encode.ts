import { InvalidMessageError, MessageTooLargeError } from '../errors.js'
import { isTypedMessage, type TypedMessage } from '../message.js'

/** A message body encoded for the wire. */
export interface Encoded {
  content: Buffer
  contentType: string
  type: string | undefined
  headers: Record<string, unknown> | undefined
}

/**
 * Encodes a message: typed messages are validated and sent as JSON with their type and version,
 * Buffers as they are, strings as text, anything else as JSON. Throws typed errors, never half-encodes.
 */
export async function encodeMessage(
  message: unknown,
  maxBytes: number,
  type: string | undefined,
  headers: Record<string, unknown> | undefined,
): Promise<Encoded> {
  if (isTypedMessage(message)) {
    const typed = message as TypedMessage<unknown>
    const body = await typed.definition.parse(typed.body)
    return check(
      Buffer.from(JSON.stringify(body)),
      'application/json',
      maxBytes,
      typed.definition.type,
      { ...headers, 'x-message-version': typed.definition.version },
    )
  }
  return encodePlain(message, maxBytes, type, headers)
}

/**
 * Encodes a message that is not typed (see {@link isTypedMessage}), synchronously: Buffers as
 * they are, strings as text, anything else as JSON.
 */
export function encodePlain(
  message: unknown,
  maxBytes: number,
  type: string | undefined,
  headers: Record<string, unknown> | undefined,
): Encoded {
  let content: Buffer
  let contentType: string
  if (Buffer.isBuffer(message)) {
    content = message
    contentType = 'application/octet-stream'
  } else if (typeof message === 'string') {
    content = Buffer.from(message, 'utf8')
    contentType = 'text/plain'
  } else {
    let json: string | undefined
    try {
      json = JSON.stringify(message)
    } catch (error) {
      throw new InvalidMessageError(
        `message cannot be encoded as JSON: ${(error as Error).message}`,
        [],
        {
          cause: error,
        },
      )
    }
    if (json === undefined)
      throw new InvalidMessageError(`message cannot be encoded as JSON: got ${typeof message}`)
    content = Buffer.from(json)
    contentType = 'application/json'
  }
  return check(content, contentType, maxBytes, type, headers)
}

function check(
  content: Buffer,
  contentType: string,
  maxBytes: number,
  type: string | undefined,
  headers: Record<string, unknown> | undefined,
): Encoded {
  if (content.length > maxBytes) throw new MessageTooLargeError(content.length, maxBytes)
  if (headers !== undefined) {
    let size = 0
    try {
      size = Buffer.byteLength(JSON.stringify(headers))
    } catch (error) {
      throw new InvalidMessageError(`headers cannot be encoded: ${(error as Error).message}`, [], {
        cause: error,
      })
    }
    if (size > 60_000) {
      throw new InvalidMessageError(
        `headers of ${size} bytes are over the 60 KB limit of an AMQP header table`,
      )
    }
  }
  return { content, contentType, type, headers }
}
