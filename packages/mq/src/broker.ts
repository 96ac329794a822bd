import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Emitter, merge, type Observe, observe, type Unsubscribe } from '@ballast/shared'
import {
  type Context,
  context,
  type Histogram,
  INVALID_SPAN_CONTEXT,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type { ChannelModel, ConsumeMessage, Options } from 'amqplib'
import type { BrokerEvents } from './brokerEvents.js'
import {
  type BrokerOptions,
  type BrokerStats,
  DEFAULT_BROKER_OPTIONS,
  DEFAULT_PUBLISH_OPTIONS,
  type PublishOptions,
} from './brokerOptions.js'
import {
  type ConsumeOptions,
  type Consumer,
  type ConsumerHost,
  type ConsumerStats,
  DEFAULT_CONSUME_OPTIONS,
  ManagedConsumer,
  type MessageHandler,
} from './consumer.js'
import {
  ConsumeFailedError,
  InvalidArgumentError,
  MqClosedError,
  UnknownExchangeError,
  UnknownQueueError,
} from './errors.js'
import { closeSafely } from './internal/closeSafely.js'
import { declareTopology, ManagedConnection, redact } from './internal/connection.js'
import { type Encoded, encodeMessage, encodePlain } from './internal/encode.js'
import { Publisher } from './internal/publisher.js'
import {
  contextWith,
  destinationOf,
  MESSAGING_SYSTEM,
  mqTelemetry,
  operationDuration,
  type PublishTarget,
  processDuration,
  publishTarget,
  records,
  settle,
  startPublishSpan,
  tracingCheck,
  withContext,
} from './internal/telemetry.js'
import { brief, check, checkArgument } from './internal/validate.js'
import { isTypedMessage, type MessageDefinition } from './message.js'
import { type ResolvedQueue, resolveTopology } from './topology.js'

const BUILTIN_EXCHANGES = new Set([
  '',
  'amq.direct',
  'amq.topic',
  'amq.fanout',
  'amq.headers',
  'amq.match',
])

/**
 * A `urls` value (or a part of it) for an error message: a string through {@link redact}, so no
 * password is echoed; of anything else only its kind, since it may hold a URL too.
 */
function showUrls(value: unknown): string {
  if (typeof value === 'string') return brief(redact(value), 200)
  if (Array.isArray(value)) return `an array of ${value.length} items`
  if (value === null || typeof value !== 'object') return String(value)
  return 'an object'
}

function resolveUrls(urls: unknown): string[] {
  const list = typeof urls === 'string' ? [urls] : urls
  if (!Array.isArray(list) || list.length === 0) {
    throw new InvalidArgumentError(
      `invalid option "urls": expected an AMQP URL or a non-empty array of them, got ${showUrls(urls)}`,
    )
  }
  for (const url of list) {
    let ok = false
    try {
      const parsed = new URL(url)
      // a host is required: amqplib reads `amqp:user:pw@host` (no "//") as no host at all and
      // connects to localhost as guest
      ok =
        typeof url === 'string' &&
        (parsed.protocol === 'amqp:' || parsed.protocol === 'amqps:') &&
        parsed.hostname !== ''
    } catch {
      ok = false
    }
    if (!ok)
      throw new InvalidArgumentError(
        `invalid option "urls": expected amqp:// or amqps:// URLs with a host, got ${showUrls(url)}`,
      )
  }
  return list as string[]
}

/**
 * The relay's path to a broker's private publish of an already-encoded message, under `parent`
 * (the context stored with the outbox row).
 */
export type PublishEncoded = (
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: Options.Publish,
  parent: Context,
) => Promise<void>

/** The broker's observable instruments (read from `stats()` at collection time). */
const BROKER_INSTRUMENTS = {
  'messaging.client.sent.messages': {
    kind: 'counter',
    description: 'Messages accepted by publish (stats().published)',
    unit: '{message}',
  },
  'ballast.mq.confirmed': {
    kind: 'counter',
    description: 'Messages the broker confirmed',
    unit: '{message}',
  },
  'ballast.mq.returned': {
    kind: 'counter',
    description: 'Mandatory messages returned as unroutable',
    unit: '{message}',
  },
  'ballast.mq.nacked': {
    kind: 'counter',
    description: 'Messages the broker nacked',
    unit: '{message}',
  },
  'ballast.mq.resent': {
    kind: 'counter',
    description: 'Messages resent after a disconnect left them unconfirmed',
    unit: '{message}',
  },
  'ballast.mq.failed': {
    kind: 'counter',
    description:
      'Publishes that failed after being accepted (policy fail, maxSendAttempts spent, close)',
    unit: '{message}',
  },
  'ballast.mq.buffered': {
    kind: 'gauge',
    description: 'Messages waiting in memory for the connection or the confirm window',
    unit: '{message}',
  },
  'ballast.mq.in_flight': {
    kind: 'gauge',
    description: 'Messages sent and not yet confirmed',
    unit: '{message}',
  },
  'messaging.client.consumed.messages': {
    kind: 'counter',
    description: 'Deliveries received, per queue',
    unit: '{message}',
  },
  'ballast.mq.processed': {
    kind: 'counter',
    description:
      'Deliveries whose processing ended, per queue and by outcome (ballast.mq.outcome): ack (handled), retry (sent to a retry queue), dead_letter, duplicate (dropped by the idempotency store)',
    unit: '{message}',
  },
  'ballast.mq.redelivered': {
    kind: 'counter',
    description: 'Deliveries the broker flagged as redelivered, per queue',
    unit: '{message}',
  },
  'ballast.mq.stale_acks': {
    kind: 'counter',
    description: 'Acks dropped because their channel had closed, per queue',
    unit: '{ack}',
  },
  'ballast.mq.cancellations': {
    kind: 'counter',
    description: 'Broker-side consumer cancellations recovered from, per queue',
    unit: '{cancellation}',
  },
  'ballast.mq.in_hand': {
    kind: 'gauge',
    description: 'Handler runs going on now, per queue',
    unit: '{message}',
  },
  'ballast.mq.reconnects': {
    kind: 'counter',
    description: 'Reconnects, per connection (publisher, consumer)',
    unit: '{reconnect}',
  },
  'ballast.mq.connected': {
    kind: 'gauge',
    description: 'Whether the connection is up now (1) or not (0), per connection',
    unit: '1',
  },
} as const

type BrokerInstrument = keyof typeof BROKER_INSTRUMENTS

/** Each per-queue consumer counter and the instrument that reports it. */
const CONSUMER_COUNTERS: ReadonlyArray<readonly [keyof ConsumerStats, BrokerInstrument]> = [
  ['consumed', 'messaging.client.consumed.messages'],
  ['redelivered', 'ballast.mq.redelivered'],
  ['staleAcks', 'ballast.mq.stale_acks'],
  ['cancellations', 'ballast.mq.cancellations'],
]

/** The per-queue counters of `ballast.mq.processed`, each with its `ballast.mq.outcome`. */
const OUTCOME_COUNTERS: ReadonlyArray<readonly [keyof ConsumerStats, string]> = [
  ['acked', 'ack'],
  ['retried', 'retry'],
  ['deadLettered', 'dead_letter'],
  ['duplicates', 'duplicate'],
]

function emptyConsumerTotals(): Record<keyof ConsumerStats, number> {
  return {
    consumed: 0,
    redelivered: 0,
    acked: 0,
    retried: 0,
    deadLettered: 0,
    duplicates: 0,
    staleAcks: 0,
    inHand: 0,
    cancellations: 0,
  }
}

/** Gives the outbox relay a broker's {@link PublishEncoded}; not part of the package's exports. */
export let publishEncodedOf: (broker: Broker) => PublishEncoded

/**
 * A RabbitMQ client that loses nothing: separate publisher and consumer connections that
 * reconnect across the cluster, the topology re-declared on each, confirmed publishing with
 * a bounded window and buffer, consumers restored after reconnects and cancels, delayed
 * retries and dead-lettering. Made by {@link createBroker}.
 */
export class Broker {
  readonly #events = new Emitter<BrokerEvents>()
  readonly #publisherConnection: ManagedConnection
  #consumerConnection: ManagedConnection | undefined
  readonly #publisher: Publisher
  readonly #topology: ReturnType<typeof resolveTopology>
  readonly #consumers = new Set<ManagedConsumer<unknown>>()
  readonly #knownExchanges: Set<string>
  readonly #settings: {
    name: string
    urls: string[]
    heartbeatIntervalMs: number
    connectTimeoutMs: number
    backoff: { initialDelay: number; maxDelay: number; factor: number; jitter: number }
    maxMessageBytes: number
    mandatory: boolean
    stamp: boolean
    shutdownTimeoutMs: number
  }
  readonly #consumerTotals: Record<keyof ConsumerStats, number> = emptyConsumerTotals()
  /** The consumer counters per queue, for the instruments' `messaging.destination.name`. */
  readonly #queueTotals = new Map<string, Record<keyof ConsumerStats, number>>()
  readonly #tracer: Tracer
  /** Whether a span could record: false while no SDK is installed. */
  readonly #tracing: () => boolean
  readonly #processDuration: Histogram
  /** `messaging.client.operation.duration` of publishes, or undefined when it records nothing (no SDK). */
  readonly #operationDuration: Histogram | undefined
  /** Span name and attributes per destination (bounded: exchanges and queues), made once each. */
  readonly #targets = new Map<string, PublishTarget>()
  readonly #stopObserving: () => void
  #closing: Promise<void> | undefined

  /** Use {@link createBroker}: the same, as a function. */
  constructor(options: BrokerOptions) {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      throw new InvalidArgumentError(
        `invalid options: expected an object with "urls", got ${showUrls(options)}`,
      )
    }
    if (options.reconnect !== undefined) check.object('reconnect', options.reconnect)
    const merged = merge(DEFAULT_BROKER_OPTIONS, options)
    const reconnect = merged.reconnect
    const urls = resolveUrls(merged.urls)
    const name = check.string('name', merged.name)
    this.#topology = resolveTopology(merged.topology)
    this.#knownExchanges = new Set([...BUILTIN_EXCHANGES, ...this.#topology.exchanges])
    this.#settings = {
      name,
      urls,
      heartbeatIntervalMs: check.duration('heartbeatInterval', merged.heartbeatInterval),
      connectTimeoutMs: check.duration('connectTimeout', merged.connectTimeout, { positive: true }),
      backoff: {
        initialDelay: check.duration('reconnect.initialDelay', reconnect.initialDelay),
        maxDelay: check.duration('reconnect.maxDelay', reconnect.maxDelay, { positive: true }),
        factor: check.number('reconnect.factor', reconnect.factor, { min: 1 }),
        jitter: check.ratio('reconnect.jitter', reconnect.jitter),
      },
      maxMessageBytes: check.positiveInteger('maxMessageBytes', merged.maxMessageBytes),
      mandatory: check.boolean('mandatory', merged.mandatory),
      stamp: check.boolean('stamp', merged.stamp),
      shutdownTimeoutMs: check.duration('shutdownTimeout', merged.shutdownTimeout),
    }
    // checked with the other options, before anything starts
    const { meter, tracer } = mqTelemetry(options)
    this.#tracer = tracer
    this.#tracing = tracingCheck(options)
    this.#processDuration = processDuration(meter)
    const duration = operationDuration(meter)
    this.#operationDuration = records(duration) ? duration : undefined
    this.#publisher = new Publisher({
      channels: check.positiveInteger('channels', merged.channels),
      confirmWindow: check.positiveInteger('confirmWindow', merged.confirmWindow),
      maxBuffered: check.positiveInteger('maxBuffered', merged.maxBuffered),
      unconfirmedPolicy: check.oneOf('unconfirmedPolicy', merged.unconfirmedPolicy, [
        'resend',
        'fail',
      ] as const),
      maxSendAttempts: check.positiveInteger('maxSendAttempts', merged.maxSendAttempts),
    })
    this.#publisherConnection = this.#createConnection('publisher')
    this.#publisherConnection.on('connect', ({ connection }) => this.#publisher.attach(connection))
    this.#publisherConnection.on('disconnect', () => this.#publisher.detach())
    this.#publisherConnection.on('failed', ({ error }) => this.#publisher.fail(error))
    this.#publisherConnection.start()
    this.#stopObserving = observe(meter, BROKER_INSTRUMENTS, (record) => this.#observe(record))
  }

  /** Reads the counters for the metrics SDK (at collection time: publishing pays nothing for it). */
  #observe(record: Observe<BrokerInstrument>): void {
    const stats = this.stats()
    // the broker's name tells brokers of one process apart (their points would overwrite each
    // other's otherwise): give each its own `name` when several report to one meter provider
    const client = this.#settings.name
    const publish = {
      'messaging.system': MESSAGING_SYSTEM,
      'messaging.client.id': client,
      'messaging.operation.name': 'publish',
    }
    record('messaging.client.sent.messages', stats.published, publish)
    record('ballast.mq.confirmed', stats.confirmed, publish)
    record('ballast.mq.returned', stats.returned, publish)
    record('ballast.mq.nacked', stats.nacked, publish)
    record('ballast.mq.resent', stats.resent, publish)
    record('ballast.mq.failed', stats.failed, publish)
    record('ballast.mq.buffered', stats.buffered, publish)
    record('ballast.mq.in_flight', stats.inFlight, publish)
    const inHand = new Map<string, number>()
    for (const consumer of this.#consumers)
      inHand.set(consumer.queue, (inHand.get(consumer.queue) ?? 0) + consumer.stats().inHand)
    for (const [queue, totals] of this.#queueTotals) {
      const attributes = {
        'messaging.system': MESSAGING_SYSTEM,
        'messaging.client.id': client,
        'messaging.destination.name': queue,
        'messaging.operation.name': 'process',
      }
      for (const [counter, name] of CONSUMER_COUNTERS) record(name, totals[counter], attributes)
      for (const [counter, outcome] of OUTCOME_COUNTERS)
        record('ballast.mq.processed', totals[counter], {
          ...attributes,
          'ballast.mq.outcome': outcome,
        })
      record('ballast.mq.in_hand', inHand.get(queue) ?? 0, attributes)
    }
    for (const role of ['publisher', 'consumer'] as const) {
      const attributes = {
        'messaging.system': MESSAGING_SYSTEM,
        'messaging.client.id': client,
        'ballast.mq.connection': role,
      }
      record('ballast.mq.reconnects', stats.reconnects[role], attributes)
      record('ballast.mq.connected', stats.connected[role] ? 1 : 0, attributes)
    }
  }

  #createConnection(role: 'publisher' | 'consumer'): ManagedConnection {
    const settings = this.#settings
    const connection = new ManagedConnection({
      role,
      urls: settings.urls,
      heartbeatMs: settings.heartbeatIntervalMs,
      connectTimeoutMs: settings.connectTimeoutMs,
      backoff: settings.backoff,
      name: settings.name,
      topology: this.#topology,
    })
    connection.on('connect', ({ url }) => this.#events.emit('connected', { role, url }))
    connection.on('disconnect', ({ error }) => this.#events.emit('disconnected', { role, error }))
    connection.on('reconnecting', ({ attempt, delayMs, error }) =>
      this.#events.emit('reconnect-scheduled', { role, attempt, delayMs, error }),
    )
    connection.on('blocked', ({ reason }) => this.#events.emit('blocked', { role, reason }))
    connection.on('unblocked', () => this.#events.emit('unblocked', { role }))
    connection.on('failed', ({ error }) => this.#events.emit('topology-failed', { error }))
    return connection
  }

  /**
   * Subscribes to an event; returns a function that unsubscribes. A listener that throws does not
   * break the broker: its error is rethrown in a microtask (an `uncaughtException`).
   */
  on<K extends keyof BrokerEvents & string>(
    event: K,
    listener: (payload: BrokerEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.on(event, listener)
  }

  /** Subscribes to the next occurrence of an event; returns a function that unsubscribes. */
  once<K extends keyof BrokerEvents & string>(
    event: K,
    listener: (payload: BrokerEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.once(event, listener)
  }

  /** Unsubscribes a listener added with `on()` or `once()`. */
  off<K extends keyof BrokerEvents & string>(
    event: K,
    listener: (payload: BrokerEvents[K]) => void,
  ): void {
    this.#events.off(event, listener)
  }

  /**
   * Resolves once the publisher connection (and the consumer connection, if consuming) is up and
   * the topology declared; rejects with {@link TopologyConflictError} if the topology conflicts.
   */
  async ready(): Promise<void> {
    if (this.#closing !== undefined) throw new MqClosedError('broker', 'ready')
    await this.#publisherConnection.connected()
    await this.#consumerConnection?.connected()
  }

  /** Resolves when the publish buffer has room (awaitable backpressure). */
  writable(): Promise<void> {
    if (this.#closing !== undefined) return Promise.reject(new MqClosedError('broker', 'writable'))
    return this.#publisher.writable()
  }

  /** The routing of a queue of the topology: its retry steps and dead-letter queue. */
  queue(name: string): ResolvedQueue | undefined {
    return this.#topology.queues.get(name)
  }

  /**
   * Publishes a message and resolves when the broker confirmed it (written to disk for a
   * persistent message on a durable queue). Objects are sent as JSON, strings as text, Buffers as
   * they are; `definition.of(body)` is validated against its schema first. While disconnected the
   * message waits in a bounded buffer.
   *
   * @throws {@link MessageTooLargeError}, {@link InvalidMessageError} (also for a property or header table over its AMQP limit), {@link InvalidArgumentError} (an exchange or routing key over 255 bytes), {@link UnknownExchangeError}: nothing was sent, and the publisher goes on with the next message.
   * @throws {@link BufferFullError} when `maxBuffered` messages wait already.
   * @throws {@link UnroutableError} when a mandatory message matched no queue.
   * @throws {@link PublishNackedError}, {@link PublishUnconfirmedError} (policy `'fail'`), {@link TopologyConflictError}, {@link MqClosedError}.
   */
  publish(
    exchange: string,
    routingKey: string,
    message: unknown,
    options: PublishOptions = {},
  ): Promise<void> {
    // not async: the common path (a Buffer, string or object to a known exchange) writes to the
    // channel in this call, without waiting for a microtask
    try {
      if (this.#closing !== undefined) throw new MqClosedError('broker', 'publish')
      if (
        typeof exchange !== 'string' ||
        (exchange.length > 85 && Buffer.byteLength(exchange) > 255)
      ) {
        throw new InvalidArgumentError(
          `invalid argument "exchange": expected a string of at most 255 bytes, got ${typeof exchange === 'string' ? `${Buffer.byteLength(exchange)} bytes` : brief(exchange)}`,
        )
      }
      if (
        typeof routingKey !== 'string' ||
        (routingKey.length > 85 && Buffer.byteLength(routingKey) > 255)
      ) {
        throw new InvalidArgumentError(
          `invalid argument "routingKey": expected a string of at most 255 bytes, got ${typeof routingKey === 'string' ? `${Buffer.byteLength(routingKey)} bytes` : brief(routingKey)}`,
        )
      }
      if (
        !this.#knownExchanges.has(exchange) ||
        (!Buffer.isBuffer(message) && isTypedMessage(message))
      ) {
        return this.#publishSlow(exchange, routingKey, message, options)
      }
      const encoded = encodePlain(
        message,
        this.#settings.maxMessageBytes,
        options.type,
        options.headers,
      )
      return this.#send(exchange, routingKey, encoded, options)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  /** Typed messages (async schema) and exchanges outside the topology (checked once). */
  async #publishSlow(
    exchange: string,
    routingKey: string,
    message: unknown,
    options: PublishOptions,
  ): Promise<void> {
    const encoded = await encodeMessage(
      message,
      this.#settings.maxMessageBytes,
      options.type,
      options.headers,
    )
    if (!this.#knownExchanges.has(exchange)) await this.#checkExchange(exchange)
    return this.#send(exchange, routingKey, encoded, options)
  }

  #send(
    exchange: string,
    routingKey: string,
    encoded: Encoded,
    options: PublishOptions,
  ): Promise<void> {
    const publishOptions: Options.Publish = {
      persistent: options.persistent ?? DEFAULT_PUBLISH_OPTIONS.persistent,
      mandatory: options.mandatory ?? this.#settings.mandatory,
      messageId: options.messageId ?? randomUUID(),
    }
    if (this.#settings.stamp) this.#stampOn(publishOptions)
    // a Buffer goes without a content type: to AMQP (and our consumers) that already means bytes,
    // and each property costs encoding time on every publish
    if (encoded.contentType !== 'application/octet-stream')
      publishOptions.contentType = encoded.contentType
    if (encoded.headers !== undefined) publishOptions.headers = encoded.headers
    if (encoded.type !== undefined) publishOptions.type = encoded.type
    if (options.expiration !== undefined)
      publishOptions.expiration = String(check.duration('expiration', options.expiration))
    if (options.priority !== undefined) publishOptions.priority = options.priority
    if (options.correlationId !== undefined) publishOptions.correlationId = options.correlationId
    return this.#traced(exchange, routingKey, encoded.content, publishOptions, context.active())
  }

  /**
   * Sends under a PRODUCER span (`publish <destination>`, a child of `parent`) whose context goes
   * into the message's headers, so the consumer continues the trace; the headers are kept with the
   * message, so a resend after a reconnect carries the same context.
   */
  #traced(
    exchange: string,
    routingKey: string,
    content: Buffer,
    publishOptions: Options.Publish,
    parent: Context,
    bypassLimit = false,
  ): Promise<void> {
    const destination = destinationOf(exchange, routingKey)
    let target = this.#targets.get(destination)
    if (target === undefined) {
      target = publishTarget(destination)
      this.#targets.set(destination, target)
    }
    const histogram = this.#operationDuration
    const started = histogram === undefined ? 0 : performance.now()
    // no SDK and no trace around: no span, nothing to propagate (the common case without an SDK
    // pays two lookups, not a span)
    if (!this.#tracing() && trace.getSpan(parent) === undefined)
      return settle(
        this.#publisher.send(exchange, routingKey, content, publishOptions, bypassLimit),
        undefined,
        histogram === undefined ? undefined : { histogram, attributes: target.attributes, started },
      )
    const span = startPublishSpan(
      this.#tracer,
      target,
      routingKey,
      publishOptions.messageId,
      content.length,
      parent,
    )
    // a span with the invalid context (no SDK for ours) has nothing to propagate
    if (span.spanContext() !== INVALID_SPAN_CONTEXT) {
      const headers = withContext(publishOptions.headers, contextWith(parent, span))
      if (headers !== undefined) publishOptions.headers = headers
    }
    const sent = this.#publisher.send(exchange, routingKey, content, publishOptions, bypassLimit)
    return settle(
      sent,
      span,
      histogram === undefined ? undefined : { histogram, attributes: target.attributes, started },
    )
  }

  static {
    publishEncodedOf = (broker) => broker.#publishEncoded.bind(broker)
  }

  /**
   * Publishes an already-encoded message (the outbox relay's path): same confirms, window and
   * buffer as {@link Broker.publish}.
   */
  #publishEncoded(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    parent: Context,
  ): Promise<void> {
    if (this.#closing !== undefined) return Promise.reject(new MqClosedError('broker', 'publish'))
    const publishOptions: Options.Publish = {
      persistent: DEFAULT_PUBLISH_OPTIONS.persistent,
      mandatory: this.#settings.mandatory,
    }
    if (this.#settings.stamp) this.#stampOn(publishOptions)
    return this.#traced(exchange, routingKey, content, { ...publishOptions, ...options }, parent)
  }

  /** Sets the `timestamp` and `appId` properties (option `stamp`). */
  #stampOn(options: Options.Publish): void {
    options.timestamp = Math.floor(Date.now() / 1000)
    options.appId = this.#settings.name
  }

  /** Checks once, on a throwaway channel, that an exchange outside the topology exists. */
  async #checkExchange(exchange: string): Promise<void> {
    await this.#publisherConnection.connected()
    const connection = this.#publisherConnection.connection
    if (connection === undefined) return this.#checkExchange(exchange)
    const channel = await connection.createChannel()
    channel.on('error', () => {})
    try {
      await channel.checkExchange(exchange)
      this.#knownExchanges.add(exchange)
    } catch (error) {
      if ((error as { code?: unknown }).code === 404)
        throw new UnknownExchangeError(exchange, { cause: error })
      throw error
    } finally {
      await closeSafely(channel)
    }
  }

  /**
   * Consumes a queue: each delivery goes to `handler`; resolving acks it, throwing sends it to the
   * queue's retry queues and, once they are spent, to its dead-letter queue with the error in the
   * headers. The consumer survives reconnects and broker-side cancels. Resolves once consuming.
   *
   * With `{ message: definition }` each body is validated against the definition's schema (an
   * invalid one is dead-lettered) and the handler's `m.body` has the definition's type. Options
   * given as `undefined` keep their defaults ({@link DEFAULT_CONSUME_OPTIONS}).
   *
   * @example
   * ```ts
   * const consumer = await broker.consume('billing', async (m) => {
   *   await charge(m.body.orderId) // m.body: the OrderPlaced schema's output type
   * }, { message: OrderPlaced, prefetch: 50 })
   * // later: stop taking messages, finish those in hand
   * await consumer.cancel()
   * ```
   */
  async consume<T = unknown>(
    queue: string,
    handler: MessageHandler<NoInfer<T>>,
    options?: ConsumeOptions<T>,
  ): Promise<Consumer> {
    if (this.#closing !== undefined) throw new MqClosedError('broker', 'consume')
    if (typeof queue !== 'string' || queue.length === 0) {
      throw new InvalidArgumentError(
        `invalid argument "queue": expected a queue name, got ${brief(queue)}`,
      )
    }
    checkArgument.func('handler', handler)
    if (options !== undefined) checkArgument.object('options', options)
    const settings = merge(DEFAULT_CONSUME_OPTIONS, options)
    const definition: MessageDefinition<T> | undefined = settings.message
    if (definition !== undefined && typeof definition?.parse !== 'function') {
      throw new InvalidArgumentError(
        `invalid option "message": expected a definition from defineMessage(), got ${brief(definition)}`,
      )
    }
    const idempotency = settings.idempotency
    if (idempotency !== undefined && typeof idempotency?.begin !== 'function') {
      throw new InvalidArgumentError(
        `invalid option "idempotency": expected a Deduplicator (begin, complete, release), got ${brief(idempotency)}`,
      )
    }
    const consumer = new ManagedConsumer<T>(
      queue,
      handler,
      {
        message: definition,
        idempotency,
        prefetch: check.positiveInteger('prefetch', settings.prefetch),
        inProgressDelayMs: check.duration('inProgressDelay', settings.inProgressDelay),
        idempotencyPrefix: check.string('idempotencyPrefix', settings.idempotencyPrefix, {
          allowEmpty: true,
        }),
        tag: check.string('tag', settings.tag ?? this.#settings.name),
      },
      this.#host(queue),
    )
    const connection = this.#startConsumerConnection()
    await connection.connected()
    // the first start reports errors (an unknown queue) to the caller; later ones retry
    let lastError: unknown
    for (let i = 0; i < 5; i++) {
      const live = connection.connection
      if (live === undefined) {
        await connection.connected()
        continue
      }
      try {
        await consumer.open(live)
        this.#consumers.add(consumer as ManagedConsumer<unknown>)
        return consumer
      } catch (error) {
        lastError = error
        if ((error as { code?: unknown }).code === 404) {
          throw new UnknownQueueError(queue, { cause: error })
        }
        await sleep(200)
      }
    }
    throw new ConsumeFailedError(
      queue,
      `cannot consume queue "${queue}": ${(lastError as Error)?.message}`,
      { cause: lastError },
    )
  }

  #startConsumerConnection(): ManagedConnection {
    if (this.#consumerConnection !== undefined) return this.#consumerConnection
    const connection = this.#createConnection('consumer')
    connection.on('connect', ({ connection: live }) => {
      for (const consumer of this.#consumers) void consumer.attach(live)
    })
    connection.on('disconnect', () => {
      for (const consumer of this.#consumers) consumer.detach()
    })
    this.#consumerConnection = connection
    connection.start()
    return connection
  }

  #host(queue: string): ConsumerHost {
    let totals = this.#queueTotals.get(queue)
    if (totals === undefined) {
      totals = emptyConsumerTotals()
      this.#queueTotals.set(queue, totals)
    }
    const perQueue = totals
    return {
      name: this.#settings.name,
      tracer: this.#tracer,
      processDuration: this.#processDuration,
      queue: (name) => this.#topology.queues.get(name),
      republish: (routingKey, message, headers) => this.#republish(routingKey, message, headers),
      redeclare: (connection: ChannelModel) => declareTopology(connection, this.#topology),
      current: () => this.#consumerConnection?.connection,
      emit: (event, payload) => this.#events.emit(event, payload),
      onCounter: (counter) => {
        this.#consumerTotals[counter]++
        perQueue[counter]++
      },
    }
  }

  #republish(
    routingKey: string,
    message: ConsumeMessage,
    headers: Record<string, unknown>,
  ): Promise<void> {
    const properties = message.properties
    const options: Options.Publish = {
      persistent: true,
      mandatory: true,
      headers: { ...(properties.headers ?? {}), ...headers },
    }
    if (properties.messageId !== undefined) options.messageId = properties.messageId
    if (properties.contentType !== undefined) options.contentType = properties.contentType
    if (properties.contentEncoding !== undefined)
      options.contentEncoding = properties.contentEncoding
    if (properties.type !== undefined) options.type = properties.type
    if (properties.correlationId !== undefined) options.correlationId = properties.correlationId
    if (properties.replyTo !== undefined) options.replyTo = properties.replyTo
    if (properties.timestamp !== undefined) options.timestamp = properties.timestamp
    if (properties.appId !== undefined) options.appId = properties.appId
    if (properties.priority !== undefined) options.priority = properties.priority
    // under the process span of the delivery (the active context): the retry's or the dead
    // letter's next delivery continues the trace from here
    return this.#traced('', routingKey, message.content, options, context.active(), true)
  }

  /** Counters and gauges of publishing and consuming. */
  stats(): BrokerStats {
    const publisherCounters = this.#publisher.counters
    const consumerCounters = this.#consumerTotals
    return {
      published: publisherCounters.published,
      confirmed: publisherCounters.confirmed,
      returned: publisherCounters.returned,
      nacked: publisherCounters.nacked,
      resent: publisherCounters.resent,
      failed: publisherCounters.failed,
      buffered: this.#publisher.buffered,
      inFlight: this.#publisher.inFlight,
      consumed: consumerCounters.consumed,
      redelivered: consumerCounters.redelivered,
      acked: consumerCounters.acked,
      retried: consumerCounters.retried,
      deadLettered: consumerCounters.deadLettered,
      duplicates: consumerCounters.duplicates,
      staleAcks: consumerCounters.staleAcks,
      cancellations: consumerCounters.cancellations,
      reconnects: {
        publisher: this.#publisherConnection.reconnects,
        consumer: this.#consumerConnection?.reconnects ?? 0,
      },
      connected: {
        publisher: this.#publisherConnection.state === 'connected',
        consumer: this.#consumerConnection?.state === 'connected',
      },
    }
  }

  /**
   * Shuts down gracefully: consumers stop taking messages and finish (and ack) those in hand,
   * buffered and unconfirmed messages get up to `shutdownTimeout` to be confirmed (also during an
   * outage: the connection keeps reconnecting meanwhile), then both connections close. Publishes
   * still pending after that reject with {@link MqClosedError}; so do `publish`, `consume`,
   * `ready` and `writable` called after `close()`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close()
    return this.#closing
  }

  async #close(): Promise<void> {
    try {
      await this.#shutDown()
    } finally {
      this.#stopObserving()
    }
  }

  async #shutDown(): Promise<void> {
    // one deadline for the whole shutdown, handlers and confirms together (as documented)
    const timeout = this.#settings.shutdownTimeoutMs
    const deadline = performance.now() + timeout
    await Promise.all([...this.#consumers].map((c) => c.cancel(timeout)))
    // during an outage too: the connection keeps reconnecting meanwhile, and a message buffered
    // while it was down is confirmed if it comes back within the timeout (after a topology
    // conflict nothing is waiting: every publish was rejected with it)
    const left = deadline - performance.now()
    if (this.#publisherConnection.state !== 'failed' && left > 0) {
      const timer = new AbortController()
      await Promise.race([
        this.#publisher.idle(),
        sleep(left, undefined, { ref: false, signal: timer.signal }).catch(() => {}),
      ])
      timer.abort()
    }
    await this.#publisher.close()
    await Promise.all([this.#publisherConnection.close(), this.#consumerConnection?.close()])
  }
}

/**
 * Creates a {@link Broker}: it connects in the background (publishes wait in the buffer
 * meanwhile); `await broker.ready()` to fail fast on a topology conflict.
 *
 * @example
 * ```ts
 * const broker = createBroker({
 *   urls: ['amqp://guest:guest@rabbit-1:5672', 'amqp://guest:guest@rabbit-2:5672'],
 *   topology: {
 *     exchanges: [{ name: 'orders', type: 'topic' }],
 *     queues: [{ name: 'billing', type: 'quorum', bindings: [{ exchange: 'orders', routingKey: 'order.*' }],
 *                retry: { attempts: 3, initialDelay: '1s', factor: 5 } }],
 *   },
 * })
 * await broker.ready()
 * await broker.publish('orders', 'order.placed', { orderId: 'o-1' })
 * await broker.close()
 * ```
 */
export function createBroker(options: BrokerOptions): Broker {
  return new Broker(options)
}
