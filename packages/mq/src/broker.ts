import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ChannelModel, ConsumeMessage, Options } from 'amqplib'
import {
  type ConsumeOptions,
  type Consumer,
  type ConsumerHost,
  type ConsumerStats,
  ManagedConsumer,
  type MessageHandler,
} from './consumer.js'
import { InvalidArgumentError, MqClosedError, MqError, UnknownExchangeError } from './errors.js'
import { closeSafely } from './internal/closeSafely.js'
import { declareTopology, ManagedConnection, redact } from './internal/connection.js'
import { type Duration, positiveInt, toMs } from './internal/duration.js'
import { type Encoded, encodeMessage, encodePlain } from './internal/encode.js'
import { Publisher } from './internal/publisher.js'
import { show } from './internal/show.js'
import { TypedEmitter } from './internal/typedEmitter.js'
import { isTypedMessage } from './message.js'
import { type ResolvedQueue, resolveTopology, type Topology } from './topology.js'

/** Reconnect backoff of {@link BrokerOptions.reconnect}. */
export interface ReconnectOptions {
  /**
   * Delay before the first reconnect attempt.
   * @default 250
   */
  initialDelay?: Duration
  /**
   * The longest delay between attempts.
   * @default 30_000
   */
  maxDelay?: Duration
  /**
   * Each attempt waits this many times longer than the one before.
   * @default 2
   */
  factor?: number
  /**
   * Random spread of each delay, as a fraction of it (0.2: +-20%), so clients do not reconnect in step.
   * @default 0.2
   */
  jitter?: number
}

/** Options of {@link createBroker}. */
export interface BrokerOptions {
  /** AMQP URL, or the URLs of the cluster's nodes (tried in turn on reconnect). */
  urls: string | string[]
  /**
   * Exchanges, queues, bindings, retry and dead-letter queues, declared on every (re)connect.
   * @default {}
   */
  topology?: Topology
  /**
   * Shown as the connection name in the broker's tooling and used as the consumer tag prefix.
   * @default 'ballast'
   */
  name?: string
  /**
   * AMQP heartbeat (rounded up to whole seconds; 0 turns heartbeats off). A connection that misses two is dropped and reopened.
   * @default 10_000
   */
  heartbeat?: Duration
  /**
   * Bound on opening one connection.
   * @default 10_000
   */
  connectTimeout?: Duration
  /**
   * Reconnect backoff.
   * @default { initialDelay: 250, maxDelay: 30_000, factor: 2, jitter: 0.2 }
   */
  reconnect?: ReconnectOptions
  /**
   * Messages published but not yet confirmed, across all publisher channels.
   * @default 1000
   */
  confirmWindow?: number
  /**
   * Confirm channels in the publisher pool. More than one spreads the load but gives up ordering across them.
   * @default 1
   */
  channels?: number
  /**
   * Messages waiting in memory for the connection or the window; past it `publish` rejects with {@link BufferFullError}.
   * @default 10_000
   */
  maxBuffered?: number
  /**
   * What happens to messages still unconfirmed when a connection drops: `'resend'` them on the
   * next connection (they may arrive twice: consumers deduplicate by message id) or `'fail'` their
   * `publish` with {@link PublishUnconfirmedError}.
   * @default 'resend'
   */
  unconfirmedPolicy?: 'resend' | 'fail'
  /**
   * How many times one message is resent after disconnects before its `publish` fails.
   * @default 10
   */
  maxResends?: number
  /**
   * Largest body accepted by `publish`, in bytes.
   * @default 4_194_304 (4 MiB)
   */
  maxMessageBytes?: number
  /**
   * Publish as `mandatory`: a message no queue takes is returned and its `publish` rejects with
   * {@link UnroutableError}, instead of being confirmed and dropped. RabbitMQ pays for it: about
   * 13% more work in the channel process per message, 14% of the rate on a classic queue in our
   * benchmark on RabbitMQ 3.10 (nothing measurable on a quorum queue). Turn it off only where
   * every route is certain, or where an alternate exchange
   * (`arguments: { 'alternate-exchange': ... }`) catches the rest.
   * @default true
   */
  mandatory?: boolean
  /**
   * Stamp every message with the AMQP `timestamp` (whole seconds) and `appId` (the broker's
   * `name`) properties. Off by default: nothing of ours needs them, and RabbitMQ's queue process
   * does about 6% more work per message with them (the README's benchmarks). (RabbitMQ can also
   * stamp arrival times itself: `message_interceptors.incoming.set_header_timestamp`.)
   * @default false
   */
  stamp?: boolean
  /**
   * How long `close()` waits for handlers in hand and unconfirmed messages.
   * @default 30_000
   */
  shutdownTimeout?: Duration
}

/** The defaults of {@link BrokerOptions}. */
export const DEFAULT_BROKER_OPTIONS: Readonly<Required<Omit<BrokerOptions, 'urls' | 'topology'>>> =
  {
    name: 'ballast',
    heartbeat: 10_000,
    connectTimeout: 10_000,
    reconnect: { initialDelay: 250, maxDelay: 30_000, factor: 2, jitter: 0.2 },
    confirmWindow: 1000,
    channels: 1,
    maxBuffered: 10_000,
    unconfirmedPolicy: 'resend',
    maxResends: 10,
    maxMessageBytes: 4 * 1024 * 1024,
    mandatory: true,
    stamp: false,
    shutdownTimeout: 30_000,
  }

/** Per-message options of {@link Broker.publish}. */
export interface PublishOptions {
  /**
   * The message id consumers deduplicate by; at most 255 UTF-8 bytes (an AMQP short string), or
   * `publish` rejects with {@link InvalidMessageError}.
   * @default a random UUID
   */
  messageId?: string
  /**
   * Application headers: at most 64 KiB once encoded as an AMQP table, names of at most 255 bytes,
   * values amqplib can encode (no NaN, bigint, function...), nested at most 64 deep; otherwise
   * `publish` rejects with {@link InvalidMessageError}.
   * @default {}
   */
  headers?: Record<string, unknown>
  /**
   * Written to disk by the broker (delivery mode 2).
   * @default true
   */
  persistent?: boolean
  /**
   * Overrides {@link BrokerOptions.mandatory} for this message.
   * @default the broker's `mandatory`
   */
  mandatory?: boolean
  /**
   * Per-message TTL.
   * @default undefined (no expiry)
   */
  expiration?: Duration
  /**
   * Priority (priority queues only): a whole number from 0 to 255.
   * @default undefined
   */
  priority?: number
  /**
   * Correlation id, e.g. of the request this answers; at most 255 UTF-8 bytes.
   * @default undefined
   */
  correlationId?: string
  /**
   * AMQP `type` property (set from the definition for typed messages); at most 255 UTF-8 bytes.
   * @default undefined
   */
  type?: string
}

/** Counters and gauges of a broker. */
export interface BrokerStats {
  /** Messages accepted by `publish`. */
  published: number
  /** Messages the broker confirmed. */
  confirmed: number
  /** Mandatory messages returned as unroutable. */
  returned: number
  /** Messages the broker nacked. */
  nacked: number
  /** Messages resent after a disconnect left them unconfirmed. */
  resent: number
  /** Publishes that failed after being accepted (policy `'fail'`, resend limit, close). */
  failed: number
  /** Messages waiting in memory now. */
  buffered: number
  /** Messages sent and not yet confirmed now. */
  inFlight: number
  /** Deliveries received by every consumer. */
  consumed: number
  /** Deliveries handled and acked. */
  acked: number
  /** Deliveries sent to a retry queue. */
  retried: number
  /** Deliveries dead-lettered. */
  deadLettered: number
  /** Deliveries dropped as duplicates. */
  duplicates: number
  /** Acks dropped because their channel had closed. */
  staleAcks: number
  /** Broker-side consumer cancellations recovered from. */
  cancellations: number
  /** Reconnects of the publisher and consumer connections. */
  reconnects: PerConnection<number>
  /** Whether each connection is up now. */
  connected: PerConnection<boolean>
}

/** A value for each of the broker's two connections. */
export interface PerConnection<T> {
  /** Of the publisher connection. */
  publisher: T
  /** Of the consumer connection. */
  consumer: T
}

/** Which of the broker's two connections an event is about. */
export type ConnectionRole = 'publisher' | 'consumer'

/** Payload of the `connected` event. */
export interface ConnectedEvent {
  /** The connection that opened. */
  role: ConnectionRole
  /** The URL it connected to, without its credentials. */
  url: string
}

/** Payload of the `disconnected` event. */
export interface DisconnectedEvent {
  /** The connection that closed. */
  role: ConnectionRole
  /** Why, if it did not close on request. */
  error: Error | undefined
}

/** Payload of the `reconnecting` event. */
export interface ReconnectingEvent {
  /** The connection being reopened. */
  role: ConnectionRole
  /** The attempt number, from 1. */
  attempt: number
  /** Milliseconds until this attempt. */
  delay: number
  /** Why the previous attempt or the connection failed. */
  error: Error | undefined
}

/** Payload of the `blocked` event. */
export interface BlockedEvent {
  /** The blocked connection. */
  role: ConnectionRole
  /** The broker's reason, e.g. `'low on memory'`. */
  reason: string
}

/** Payload of the `unblocked` event. */
export interface UnblockedEvent {
  /** The unblocked connection. */
  role: ConnectionRole
}

/** Payload of the `topology.failed` event. */
export interface TopologyFailedEvent {
  /** The {@link TopologyConflictError} (or other declaration error) that stopped the broker. */
  error: Error
}

/** Payload of the `consumer.started` event. */
export interface ConsumerStartedEvent {
  /** The consumed queue. */
  queue: string
  /** The consumer tag the broker knows the consumer by. */
  consumerTag: string
}

/** Payload of the `consumer.cancelled` event. */
export interface ConsumerCancelledEvent {
  /** The queue whose consumer the broker cancelled. */
  queue: string
}

/** Payload of the `consumer.error` event. */
export interface ConsumerErrorEvent {
  /** The consumed queue. */
  queue: string
  /** What failed. */
  error: unknown
}

/** Payload of the `handler.error` event. */
export interface HandlerErrorEvent {
  /** The consumed queue. */
  queue: string
  /** The message's id, if it has one. */
  messageId: string | undefined
  /** Which delivery attempt failed, from 1. */
  attempt: number
  /** What the handler threw. */
  error: unknown
}

/** Payload of the `retried` event. */
export interface RetriedEvent {
  /** The consumed queue. */
  queue: string
  /** The message's id, if it has one. */
  messageId: string | undefined
  /** The attempt that failed, from 1. */
  attempt: number
  /** Milliseconds before the message comes back. */
  delay: number
}

/** Payload of the `dead-lettered` event. */
export interface DeadLetteredEvent {
  /** The consumed queue. */
  queue: string
  /** The message's id, if it has one. */
  messageId: string | undefined
  /** The last error (handler, schema or decoding). */
  error: unknown
}

/** Payload of the `duplicate` event. */
export interface DuplicateEvent {
  /** The consumed queue. */
  queue: string
  /** The id that was handled before. */
  messageId: string | undefined
}

/** Events of a {@link Broker}, by name. */
export interface BrokerEvents {
  /** A connection opened and the topology is declared. */
  connected: ConnectedEvent
  /** A connection closed. */
  disconnected: DisconnectedEvent
  /** A reconnect attempt is scheduled. */
  reconnecting: ReconnectingEvent
  /** The broker blocked a connection (memory or disk alarm): publishing waits. */
  blocked: BlockedEvent
  /** The broker unblocked a connection. */
  unblocked: UnblockedEvent
  /** The topology conflicts with what exists: the broker stopped; publishes fail with this error. */
  'topology.failed': TopologyFailedEvent
  /** A consumer started (again) on a channel. */
  'consumer.started': ConsumerStartedEvent
  /** The broker cancelled a consumer; it is being restored. */
  'consumer.cancelled': ConsumerCancelledEvent
  /** A consumer could not (re)start or settle a message; it keeps trying. */
  'consumer.error': ConsumerErrorEvent
  /** A handler threw. */
  'handler.error': HandlerErrorEvent
  /** A failed message went to a retry queue. */
  retried: RetriedEvent
  /** A message was dead-lettered (retries spent, invalid, or a permanent error). */
  'dead-lettered': DeadLetteredEvent
  /** A delivery was dropped because its message id was handled before. */
  duplicate: DuplicateEvent
}

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
  if (typeof value === 'string') return show(redact(value), 200)
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
 * A RabbitMQ client that loses nothing: separate publisher and consumer connections that
 * reconnect across the cluster, the topology re-declared on each, confirmed publishing with
 * a bounded window and buffer, consumers restored after reconnects and cancels, delayed
 * retries and dead-lettering. Made by {@link createBroker}.
 */
export class Broker {
  readonly #events = new TypedEmitter<BrokerEvents & Record<string, unknown>>()
  readonly #publisherConnection: ManagedConnection
  #consumerConnection: ManagedConnection | undefined
  readonly #publisher: Publisher
  readonly #topology: ReturnType<typeof resolveTopology>
  readonly #consumers = new Set<ManagedConsumer<unknown>>()
  readonly #knownExchanges: Set<string>
  readonly #settings: {
    name: string
    urls: string[]
    heartbeatMs: number
    connectTimeoutMs: number
    backoff: { initialDelay: number; maxDelay: number; factor: number; jitter: number }
    maxMessageBytes: number
    mandatory: boolean
    stamp: boolean
    shutdownTimeoutMs: number
  }
  readonly #consumerTotals: Record<keyof ConsumerStats, number> = {
    consumed: 0,
    acked: 0,
    retried: 0,
    deadLettered: 0,
    duplicates: 0,
    staleAcks: 0,
    inHand: 0,
    cancellations: 0,
  }
  #closing: Promise<void> | undefined

  /** Use {@link createBroker}. @internal */
  constructor(options: BrokerOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(
        `invalid options: expected an object with "urls", got ${showUrls(options)}`,
      )
    }
    const o = { ...DEFAULT_BROKER_OPTIONS, ...options }
    const r = { ...DEFAULT_BROKER_OPTIONS.reconnect, ...(options.reconnect ?? {}) }
    const urls = resolveUrls(o.urls)
    if (typeof o.name !== 'string' || o.name.length === 0) {
      throw new InvalidArgumentError(
        `invalid option "name": expected a non-empty string, got ${JSON.stringify(o.name)}`,
      )
    }
    const heartbeatMs = toMs('heartbeat', o.heartbeat)
    if (typeof r.factor !== 'number' || !(r.factor >= 1)) {
      throw new InvalidArgumentError(
        `invalid option "reconnect.factor": expected a number >= 1, got ${JSON.stringify(r.factor)}`,
      )
    }
    if (typeof r.jitter !== 'number' || !(r.jitter >= 0 && r.jitter <= 1)) {
      throw new InvalidArgumentError(
        `invalid option "reconnect.jitter": expected a number from 0 to 1, got ${JSON.stringify(r.jitter)}`,
      )
    }
    if (o.unconfirmedPolicy !== 'resend' && o.unconfirmedPolicy !== 'fail') {
      throw new InvalidArgumentError(
        `invalid option "unconfirmedPolicy": expected 'resend' or 'fail', got ${JSON.stringify(o.unconfirmedPolicy)}`,
      )
    }
    this.#topology = resolveTopology(o.topology)
    this.#knownExchanges = new Set([...BUILTIN_EXCHANGES, ...this.#topology.exchanges])
    this.#settings = {
      name: o.name,
      urls,
      heartbeatMs,
      connectTimeoutMs: toMs('connectTimeout', o.connectTimeout, { allowZero: false }),
      backoff: {
        initialDelay: toMs('reconnect.initialDelay', r.initialDelay),
        maxDelay: toMs('reconnect.maxDelay', r.maxDelay, { allowZero: false }),
        factor: r.factor,
        jitter: r.jitter,
      },
      maxMessageBytes: positiveInt('maxMessageBytes', o.maxMessageBytes),
      mandatory: o.mandatory === true,
      stamp: o.stamp === true,
      shutdownTimeoutMs: toMs('shutdownTimeout', o.shutdownTimeout),
    }
    for (const name of ['mandatory', 'stamp'] as const) {
      if (typeof o[name] !== 'boolean') {
        throw new InvalidArgumentError(
          `invalid option "${name}": expected a boolean, got ${JSON.stringify(o[name])}`,
        )
      }
    }
    this.#publisher = new Publisher({
      channels: positiveInt('channels', o.channels),
      confirmWindow: positiveInt('confirmWindow', o.confirmWindow),
      maxBuffered: positiveInt('maxBuffered', o.maxBuffered),
      unconfirmedPolicy: o.unconfirmedPolicy,
      maxResends: positiveInt('maxResends', o.maxResends, { allowZero: true }),
    })
    this.#publisherConnection = this.#connection('publisher')
    this.#publisherConnection.on('connect', ({ connection }) => this.#publisher.attach(connection))
    this.#publisherConnection.on('disconnect', () => this.#publisher.detach())
    this.#publisherConnection.on('failed', ({ error }) => this.#publisher.fail(error))
    this.#publisherConnection.start()
  }

  #connection(role: 'publisher' | 'consumer'): ManagedConnection {
    const s = this.#settings
    const connection = new ManagedConnection({
      role,
      urls: s.urls,
      heartbeatMs: s.heartbeatMs,
      connectTimeoutMs: s.connectTimeoutMs,
      backoff: s.backoff,
      name: s.name,
      topology: this.#topology,
    })
    connection.on('connect', ({ url }) => this.#events.emit('connected', { role, url }))
    connection.on('disconnect', ({ error }) => this.#events.emit('disconnected', { role, error }))
    connection.on('reconnecting', (e) => this.#events.emit('reconnecting', { role, ...e }))
    connection.on('blocked', ({ reason }) => this.#events.emit('blocked', { role, reason }))
    connection.on('unblocked', () => this.#events.emit('unblocked', { role }))
    connection.on('failed', ({ error }) => this.#events.emit('topology.failed', { error }))
    return connection
  }

  /** Subscribes to an event. */
  on<K extends keyof BrokerEvents>(event: K, listener: (payload: BrokerEvents[K]) => void): this {
    this.#events.on(event, listener as (payload: unknown) => void)
    return this
  }

  /** Subscribes to the next occurrence of an event. */
  once<K extends keyof BrokerEvents>(event: K, listener: (payload: BrokerEvents[K]) => void): this {
    this.#events.once(event, listener as (payload: unknown) => void)
    return this
  }

  /** Unsubscribes from an event. */
  off<K extends keyof BrokerEvents>(event: K, listener: (payload: BrokerEvents[K]) => void): this {
    this.#events.off(event, listener as (payload: unknown) => void)
    return this
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
          `invalid argument "exchange": expected a string of at most 255 bytes, got ${typeof exchange === 'string' ? `${Buffer.byteLength(exchange)} bytes` : show(exchange)}`,
        )
      }
      if (
        typeof routingKey !== 'string' ||
        (routingKey.length > 85 && Buffer.byteLength(routingKey) > 255)
      ) {
        throw new InvalidArgumentError(
          `invalid argument "routingKey": expected a string of at most 255 bytes, got ${typeof routingKey === 'string' ? `${Buffer.byteLength(routingKey)} bytes` : show(routingKey)}`,
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
      persistent: options.persistent ?? true,
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
      publishOptions.expiration = String(toMs('expiration', options.expiration))
    if (options.priority !== undefined) publishOptions.priority = options.priority
    if (options.correlationId !== undefined) publishOptions.correlationId = options.correlationId
    return this.#publisher.send(exchange, routingKey, encoded.content, publishOptions)
  }

  /** The largest body `publish` accepts (for the outbox, which encodes ahead of time). @internal */
  get maxMessageBytes(): number {
    return this.#settings.maxMessageBytes
  }

  /**
   * Publishes an already-encoded message (the outbox relay's path): same confirms, window and
   * buffer as {@link Broker.publish}. @internal
   */
  publishEncoded(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
  ): Promise<void> {
    if (this.#closing !== undefined) return Promise.reject(new MqClosedError('broker', 'publish'))
    const publishOptions: Options.Publish = {
      persistent: true,
      mandatory: this.#settings.mandatory,
    }
    if (this.#settings.stamp) this.#stampOn(publishOptions)
    return this.#publisher.send(exchange, routingKey, content, { ...publishOptions, ...options })
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
   * @example
   * ```ts
   * const consumer = await broker.consume('billing', async (m) => {
   *   await charge(m.body)
   * }, { prefetch: 50 })
   * // later: stop taking messages, finish those in hand
   * await consumer.cancel()
   * ```
   */
  async consume<T = unknown>(
    queue: string,
    handler: MessageHandler<T>,
    options: ConsumeOptions<T> = {},
  ): Promise<Consumer> {
    if (this.#closing !== undefined) throw new MqClosedError('broker', 'consume')
    if (typeof queue !== 'string' || queue.length === 0) {
      throw new InvalidArgumentError(
        `invalid argument "queue": expected a queue name, got ${show(queue)}`,
      )
    }
    if (typeof handler !== 'function')
      throw new InvalidArgumentError('invalid argument "handler": expected a function')
    const prefetch = positiveInt('prefetch', options.prefetch ?? 32)
    const inProgressDelay = toMs('inProgressDelay', options.inProgressDelay ?? 1000)
    const consumer = new ManagedConsumer<T>(
      queue,
      handler,
      {
        ...options,
        prefetch,
        inProgressDelay,
        idempotencyPrefix: options.idempotencyPrefix ?? 'mq:',
        tag: options.tag ?? this.#settings.name,
      },
      this.#host(),
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
          throw new MqError('E_MQ_UNKNOWN_QUEUE', `queue "${queue}" does not exist`, {
            cause: error,
          })
        }
        await sleep(200)
      }
    }
    throw new MqError(
      'E_MQ_CONSUME',
      `cannot consume queue "${queue}": ${(lastError as Error)?.message}`,
      {
        cause: lastError,
        retryable: true,
      },
    )
  }

  #startConsumerConnection(): ManagedConnection {
    if (this.#consumerConnection !== undefined) return this.#consumerConnection
    const connection = this.#connection('consumer')
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

  #host(): ConsumerHost {
    return {
      name: this.#settings.name,
      queue: (name) => this.#topology.queues.get(name),
      republish: (routingKey, message, headers) => this.#republish(routingKey, message, headers),
      redeclare: (connection: ChannelModel) => declareTopology(connection, this.#topology),
      current: () => this.#consumerConnection?.connection,
      emit: (event, payload) => this.#events.emit(event, payload as never),
      onCounter: (counter) => {
        this.#consumerTotals[counter]++
      },
    }
  }

  #republish(
    routingKey: string,
    message: ConsumeMessage,
    headers: Record<string, unknown>,
  ): Promise<void> {
    const p = message.properties
    const options: Options.Publish = {
      persistent: true,
      mandatory: true,
      headers: { ...(p.headers ?? {}), ...headers },
    }
    if (p.messageId !== undefined) options.messageId = p.messageId
    if (p.contentType !== undefined) options.contentType = p.contentType
    if (p.contentEncoding !== undefined) options.contentEncoding = p.contentEncoding
    if (p.type !== undefined) options.type = p.type
    if (p.correlationId !== undefined) options.correlationId = p.correlationId
    if (p.replyTo !== undefined) options.replyTo = p.replyTo
    if (p.timestamp !== undefined) options.timestamp = p.timestamp
    if (p.appId !== undefined) options.appId = p.appId
    if (p.priority !== undefined) options.priority = p.priority
    return this.#publisher.send('', routingKey, message.content, options, true)
  }

  /** Counters and gauges of publishing and consuming. */
  stats(): BrokerStats {
    const p = this.#publisher.counters
    const c = this.#consumerTotals
    return {
      published: p.published,
      confirmed: p.confirmed,
      returned: p.returned,
      nacked: p.nacked,
      resent: p.resent,
      failed: p.failed,
      buffered: this.#publisher.buffered,
      inFlight: this.#publisher.inFlight,
      consumed: c.consumed,
      acked: c.acked,
      retried: c.retried,
      deadLettered: c.deadLettered,
      duplicates: c.duplicates,
      staleAcks: c.staleAcks,
      cancellations: c.cancellations,
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
