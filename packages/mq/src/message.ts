import { merge } from '@ballast/shared'
import { InvalidMessageError } from './errors.js'
import type { StandardSchemaV1, StandardSchemaV1Issue } from './internal/standardSchema.js'
import { check } from './internal/validate.js'

/** What {@link defineMessage} takes. */
export interface MessageDefinitionOptions<T> {
  /** The message type, sent as the AMQP `type` property, e.g. `'order.placed'`. */
  type: string
  /**
   * The schema version of this definition, sent in the `x-message-version` header.
   * @default 1
   */
  version?: number
  /** A Standard Schema (zod, valibot, arktype, ...) the body must satisfy, on publish and on consume. */
  schema: StandardSchemaV1<unknown, T>
  /**
   * Turns a body written by an older version into the current shape before validation.
   * @default undefined (older versions are validated as they are)
   */
  upgrade?: (body: unknown, fromVersion: number) => unknown
}

/** The defaults of {@link MessageDefinitionOptions}. */
export const DEFAULT_MESSAGE_DEFINITION_OPTIONS: Readonly<
  Required<Pick<MessageDefinitionOptions<unknown>, 'version'>>
> = Object.freeze({ version: 1 })

/** A typed message kind: its name, version and schema. Made by {@link defineMessage}. */
export interface MessageDefinition<T> {
  /** The message type. */
  readonly type: string
  /** The current version. */
  readonly version: number
  /** The schema. */
  readonly schema: StandardSchemaV1<unknown, T>
  /** Wraps a body for {@link Broker.publish}; validation happens at publish. */
  of(body: T): TypedMessage<T>
  /**
   * Validates (and upgrades) a received body written by version `version` (default: the current one).
   * @throws {@link InvalidMessageError} when it does not match, or when `version` is not an integer
   * from 1 to the current version (`upgrade` is not called then).
   */
  parse(body: unknown, version?: number): Promise<T>
}

/** A body tagged with its {@link MessageDefinition}, ready to publish. */
export interface TypedMessage<T> {
  /** The definition the body must satisfy. */
  readonly definition: MessageDefinition<T>
  /** The body. */
  readonly body: T
}

const TYPED = Symbol.for('ballast.mq.typedMessage')

/** Whether `value` was made by {@link MessageDefinition.of}. */
export function isTypedMessage(value: unknown): value is TypedMessage<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[TYPED] === true
  )
}

/**
 * Reads the `x-message-version` header of a received message for a definition at version
 * `known`: absent means `known` (a producer without versions); otherwise it must be an integer
 * from 1 to `known`, as a number or in canonical decimal. A newer version would be parsed as the
 * current one (its new fields dropped) and a fractional one would run `upgrade`, so both are refused.
 * @throws {@link InvalidMessageError} naming the version otherwise.
 */
export function messageVersion(value: unknown, known: number): number {
  if (value === undefined) return known
  const version =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^[1-9][0-9]{0,8}$/.test(value)
        ? Number(value)
        : undefined
  if (version === undefined || !Number.isInteger(version) || version < 1 || version > known) {
    throw new InvalidMessageError(
      `unsupported message version ${describeVersion(value)}: expected an integer from 1 to ${known}`,
    )
  }
  return version
}

function describeVersion(value: unknown): string {
  try {
    return (JSON.stringify(value) ?? String(value)).slice(0, 100)
  } catch {
    return typeof value
  }
}

function formatIssues(issues: ReadonlyArray<StandardSchemaV1Issue>): string[] {
  return issues.map((issue) => {
    const path = (issue.path ?? [])
      .map((p) => (typeof p === 'object' && p !== null ? String(p.key) : String(p)))
      .join('.')
    return path ? `${path}: ${issue.message}` : issue.message
  })
}

/**
 * Defines a typed message: a type name, a version and a Standard Schema. Publishing
 * `definition.of(body)` validates the body first (an invalid one is a typed error and nothing is
 * sent); consuming with `{ message: definition }` validates every delivery, and an invalid one goes
 * straight to the dead-letter queue with the reason in its headers.
 *
 * @example
 * ```ts
 * import { z } from 'zod'
 * const OrderPlaced = defineMessage({
 *   type: 'order.placed',
 *   version: 2,
 *   schema: z.object({ orderId: z.string(), total: z.number() }),
 *   upgrade: (body, from) => (from === 1 ? { ...(body as object), total: 0 } : body),
 * })
 * await broker.publish('orders', 'order.placed', OrderPlaced.of({ orderId: 'o-1', total: 42 }))
 * broker.consume('billing', async (m) => charge(m.body.orderId, m.body.total), { message: OrderPlaced })
 * ```
 */
export function defineMessage<T>(options: MessageDefinitionOptions<T>): MessageDefinition<T> {
  check.object('options', options)
  const settings = merge(DEFAULT_MESSAGE_DEFINITION_OPTIONS, options)
  check.string('type', settings.type)
  const version = check.positiveInteger('version', settings.version)
  if (typeof settings.schema?.['~standard']?.validate !== 'function') {
    check.invalid('schema', 'a Standard Schema (zod, valibot, arktype, ...)', settings.schema)
  }
  if (settings.upgrade !== undefined) check.func('upgrade', settings.upgrade)
  const { type, schema, upgrade } = settings
  const definition: MessageDefinition<T> = {
    type,
    version,
    schema,
    of(body: T): TypedMessage<T> {
      return Object.defineProperty({ definition, body }, TYPED, { value: true }) as TypedMessage<T>
    },
    async parse(body: unknown, from = version): Promise<T> {
      if (!Number.isInteger(from) || from < 1 || from > version) {
        throw new InvalidMessageError(
          `unsupported "${type}" message version ${String(from)}: expected an integer from 1 to ${version}`,
        )
      }
      const input = upgrade !== undefined && from < version ? upgrade(body, from) : body
      const result = await schema['~standard'].validate(input)
      if (result.issues !== undefined) {
        const issues = formatIssues(result.issues)
        throw new InvalidMessageError(
          `invalid "${type}" message (v${from}): ${issues.join('; ')}`,
          issues,
        )
      }
      return result.value
    },
  }
  return definition
}
