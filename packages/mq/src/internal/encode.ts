import type { Options } from 'amqplib'
import { InvalidArgumentError, InvalidMessageError, MessageTooLargeError } from '../errors.js'
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
  if (headers !== undefined && headers !== null) {
    const issue = headersIssue(headers)
    if (issue !== undefined)
      throw new InvalidMessageError(`the message cannot be sent: ${issue}`, [issue])
  }
  return { content, contentType, type, headers }
}

/**
 * The largest header table amqplib encodes, in bytes with its 4-byte length: it writes every
 * table into one scratch buffer of 64 KiB (`SCRATCH` in amqplib's lib/defs.js) and throws a
 * RangeError past it (`checkSpace` in lib/codec.js).
 */
export const MAX_HEADER_TABLE_BYTES = 65_536

/** The longest AMQP short string (exchange, routing key, message id, type...), in UTF-8 bytes. */
export const MAX_SHORTSTR_BYTES = 255

/** Header tables and arrays nested deeper than this are refused (amqplib recurses without a bound). */
export const MAX_HEADER_DEPTH = 64

/** Why a string is not an AMQP short string, if it is not one. */
function shortstrIssue(name: string, value: unknown): string | undefined {
  if (typeof value !== 'string') return `"${name}" must be a string, got ${typeof value}`
  // a UTF-16 unit takes at most 3 UTF-8 bytes: 85 units always fit, so most values skip the count
  if (value.length <= 85) return undefined
  const bytes = Buffer.byteLength(value)
  return bytes > MAX_SHORTSTR_BYTES
    ? `"${name}" of ${bytes} bytes is over the ${MAX_SHORTSTR_BYTES}-byte limit of an AMQP short string`
    : undefined
}

/**
 * Checks, before anything is written, that amqplib can put a message on the wire: exchange and
 * routing key, every short-string property, the numeric properties and the header table. One
 * function for every path that publishes (`publish`, the outbox relay, retry and dead-letter
 * republishing), because amqplib throws from `channel.publish` on any of them and the publisher
 * must tell that from a closed channel.
 *
 * @throws {@link InvalidArgumentError} for the exchange or routing key, {@link InvalidMessageError}
 * (with every issue found) for the properties and headers.
 */
export function checkPublish(exchange: string, routingKey: string, options: Options.Publish): void {
  const nameIssue = shortstrIssue('exchange', exchange) ?? shortstrIssue('routingKey', routingKey)
  if (nameIssue !== undefined) throw new InvalidArgumentError(`invalid argument ${nameIssue}`)
  // nothing is allocated unless an issue is found: this runs on every publish
  let issues: string[] | undefined
  // one named read per property, not a loop of keyed reads: this runs on every publish
  const o = options as Options.Publish & { clusterId?: unknown }
  if (o.contentType != null) issues = append(issues, shortstrIssue('contentType', o.contentType))
  if (o.contentEncoding != null)
    issues = append(issues, shortstrIssue('contentEncoding', o.contentEncoding))
  if (o.correlationId != null)
    issues = append(issues, shortstrIssue('correlationId', o.correlationId))
  if (o.replyTo != null) issues = append(issues, shortstrIssue('replyTo', o.replyTo))
  if (o.messageId != null) issues = append(issues, shortstrIssue('messageId', o.messageId))
  if (o.type != null) issues = append(issues, shortstrIssue('type', o.type))
  if (o.userId != null) issues = append(issues, shortstrIssue('userId', o.userId))
  if (o.appId != null) issues = append(issues, shortstrIssue('appId', o.appId))
  // clusterId is not in amqplib's types, but its codec encodes it when given
  if (o.clusterId != null) issues = append(issues, shortstrIssue('clusterId', o.clusterId))
  if (options.expiration !== undefined && options.expiration !== null) {
    issues = append(issues, shortstrIssue('expiration', String(options.expiration)))
  }
  issues = append(issues, octetIssue('priority', options.priority))
  if (typeof options.deliveryMode === 'number') {
    issues = append(issues, octetIssue('deliveryMode', options.deliveryMode))
  }
  const timestamp = options.timestamp as unknown
  if (timestamp !== undefined && timestamp !== null && !isUint64(timestamp)) {
    issues = append(
      issues,
      `"timestamp" must be a whole number of seconds from 0 to 2^64-1, got ${String(timestamp)}`,
    )
  }
  if (options.CC !== undefined || options.BCC !== undefined) {
    issues = append(issues, '"CC" and "BCC" (sender-selected distribution) are not supported')
  }
  if (options.headers !== undefined && options.headers !== null) {
    issues = append(issues, headersIssue(options.headers))
  }
  if (issues !== undefined) {
    throw new InvalidMessageError(`the message cannot be sent: ${issues.join('; ')}`, issues)
  }
}

function append(issues: string[] | undefined, issue: string | undefined): string[] | undefined {
  if (issue === undefined) return issues
  const list = issues ?? []
  list.push(issue)
  return list
}

function octetIssue(name: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 255
    ? undefined
    : `"${name}" must be a whole number from 0 to 255, got ${String(value)}`
}

function isUint64(value: unknown): boolean {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) < 2 ** 64
}

/** A header table amqplib cannot encode, found while measuring it. */
class Unencodable extends Error {}

/**
 * Where a header value sits, for the message: `headers.a.b[2]`. Built only for an error or to
 * descend into a nested table or array: a flat header table (the common case, measured on every
 * publish) allocates no path strings.
 */
function at(path: string, key: string | number): string {
  return typeof key === 'number'
    ? `${path}[${key}]`
    : `${path}.${JSON.stringify(key).slice(1, -1).slice(0, 40)}`
}

/**
 * Why amqplib cannot encode `headers` as a field table, if it cannot: a table over
 * {@link MAX_HEADER_TABLE_BYTES}, a header name over 255 bytes, a value of a type or range its
 * codec throws on (a NaN, a fraction beyond 2^50, `undefined` in an array, a bigint, a function),
 * `CC`/`BCC` headers that are not arrays of strings (RabbitMQ routes by them), or nesting deeper
 * than {@link MAX_HEADER_DEPTH}. Measures the table the way amqplib's codec writes it, and stops
 * as soon as it is too large (so a cyclic object ends too).
 */
export function headersIssue(headers: unknown): string | undefined {
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    return `"headers" must be an object, got ${Array.isArray(headers) ? 'an array' : typeof headers}`
  }
  const cursor = { bytes: 0 }
  try {
    const table = headers as Record<string, unknown>
    // (two checks rather than a loop over ['CC', 'BCC']: this runs on every publish with headers)
    if (table.CC !== undefined && !isStringArray(table.CC)) {
      return 'header "CC" must be an array of strings (RabbitMQ routes by it)'
    }
    if (table.BCC !== undefined && !isStringArray(table.BCC)) {
      return 'header "BCC" must be an array of strings (RabbitMQ routes by it)'
    }
    measureTable(cursor, headers as Record<string, unknown>, 'headers', 0)
  } catch (error) {
    if (error instanceof Unencodable) return error.message
    return `"headers" cannot be encoded: ${(error as Error)?.message ?? String(error)}`
  }
  return undefined
}

function isStringArray(value: unknown): boolean {
  return Array.isArray(value) && value.every((v) => typeof v === 'string')
}

function grow(cursor: { bytes: number }, bytes: number): void {
  cursor.bytes += bytes
  if (cursor.bytes > MAX_HEADER_TABLE_BYTES) {
    throw new Unencodable(
      `"headers" encode to more than the ${MAX_HEADER_TABLE_BYTES} bytes of an AMQP header table (amqplib's limit)`,
    )
  }
}

function measureTable(
  cursor: { bytes: number },
  table: Record<string, unknown>,
  path: string,
  depth: number,
): void {
  if (depth > MAX_HEADER_DEPTH) {
    throw new Unencodable(`"headers" are nested deeper than ${MAX_HEADER_DEPTH} levels`)
  }
  grow(cursor, 4)
  // for...in, like amqplib's encodeTable: inherited enumerable keys are encoded too
  for (const key in table) {
    const value = table[key]
    if (value === undefined) continue
    const keyBytes = Buffer.byteLength(key)
    if (keyBytes > MAX_SHORTSTR_BYTES) {
      throw new Unencodable(
        `header name at ${at(path, key)} of ${keyBytes} bytes is over the ${MAX_SHORTSTR_BYTES}-byte limit`,
      )
    }
    grow(cursor, 1 + keyBytes)
    measureValue(cursor, value, path, key, depth)
  }
}

/** amqplib's guess for a JS number: a double, or the smallest signed integer that holds it. */
function numberBytes(value: number, path: string, key: string | number): number {
  if (
    value >= 0x8000000000000000 ||
    (Math.abs(value) < 0x4000000000000 && Math.floor(value) !== value)
  ) {
    return 9
  }
  if (value < 128 && value >= -128) return 2
  if (value >= -0x8000 && value < 0x8000) return 3
  if (value >= -0x80000000 && value < 0x80000000) return 5
  // amqplib writes the rest as a signed 64-bit integer: BigInt() throws on NaN, infinities and
  // fractions, writeBigInt64BE below -2^63
  if (!Number.isInteger(value) || value < -0x8000000000000000) {
    throw new Unencodable(
      `header value at ${at(path, key)} (${value}) cannot be encoded as an AMQP number`,
    )
  }
  return 9
}

/** The explicit types amqplib takes as `{ '!': type, value }`, with the checks its codec needs. */
function typedValueBytes(
  type: unknown,
  value: unknown,
  path: string,
  key: string | number,
): number {
  const integer = (min: number, max: number) =>
    Number.isInteger(value) && (value as number) >= min && (value as number) <= max
  switch (type) {
    case 'double':
    case 'float64':
    case 'float':
      if (typeof value !== 'number') break
      return type === 'float' ? 5 : 9
    case 'byte':
    case 'int8':
      if (!integer(-128, 127)) break
      return 2
    case 'unsignedbyte':
    case 'uint8':
      if (!integer(0, 255)) break
      return 2
    case 'short':
    case 'int16':
      if (!integer(-0x8000, 0x7fff)) break
      return 3
    case 'unsignedshort':
    case 'uint16':
      if (!integer(0, 0xffff)) break
      return 3
    case 'int':
    case 'int32':
      if (!integer(-0x80000000, 0x7fffffff)) break
      return 5
    case 'unsignedint':
    case 'uint32':
      if (!integer(0, 0xffffffff)) break
      return 5
    case 'long':
    case 'int64':
      if (!integer(-(2 ** 63), 2 ** 63 - 1) || (value as number) >= 2 ** 63) break
      return 9
    case 'timestamp':
      if (!isUint64(value)) break
      return 9
    case 'decimal': {
      const d = value as { places?: unknown; digits?: unknown } | null
      if (
        typeof d !== 'object' ||
        d === null ||
        !Object.hasOwn(d, 'places') ||
        !Object.hasOwn(d, 'digits') ||
        !Number.isInteger(d.places) ||
        (d.places as number) < 0 ||
        (d.places as number) > 255 ||
        !Number.isInteger(d.digits) ||
        (d.digits as number) < 0 ||
        (d.digits as number) > 0xffffffff
      ) {
        break
      }
      return 6
    }
  }
  throw new Unencodable(
    `header value at ${at(path, key)} ({ "!": ${JSON.stringify(String(type)).slice(0, 40)} }) is not an encodable typed value`,
  )
}

/** Measures `value`, found at `key` of the table or array at `path`. */
function measureValue(
  cursor: { bytes: number },
  value: unknown,
  path: string,
  key: string | number,
  depth: number,
): void {
  switch (typeof value) {
    case 'string':
      grow(cursor, 5 + Buffer.byteLength(value))
      return
    case 'boolean':
      grow(cursor, 2)
      return
    case 'number':
      grow(cursor, numberBytes(value, path, key))
      return
    case 'object': {
      if (value === null) {
        grow(cursor, 1)
        return
      }
      if (Array.isArray(value)) {
        if (depth + 1 > MAX_HEADER_DEPTH) {
          throw new Unencodable(`"headers" are nested deeper than ${MAX_HEADER_DEPTH} levels`)
        }
        grow(cursor, 5)
        const inner = at(path, key)
        for (let i = 0; i < value.length; i++) {
          // amqplib encodes every element: a hole or an undefined is an unknown type to it
          measureValue(cursor, value[i], inner, i, depth + 1)
        }
        return
      }
      if (Buffer.isBuffer(value)) {
        grow(cursor, 5 + value.length)
        return
      }
      if (Object.hasOwn(value, '!')) {
        const typed = value as { '!': unknown; value: unknown }
        const type = typed['!']
        // amqplib's trapdoor: the plain types are encoded as usual, the others by name
        if (type === 'string' || type === 'number' || type === 'boolean' || type === 'object') {
          if (typeof typed.value !== type || typed.value === null) {
            throw new Unencodable(`header value at ${at(path, key)} is not a ${type}`)
          }
          measureValue(cursor, typed.value, path, key, depth + 1)
          return
        }
        grow(cursor, typedValueBytes(type, typed.value, path, key))
        return
      }
      grow(cursor, 1)
      measureTable(cursor, value as Record<string, unknown>, at(path, key), depth + 1)
      return
    }
    default:
      throw new Unencodable(
        `header value at ${at(path, key)} is a ${typeof value}, which AMQP cannot carry`,
      )
  }
}
