import type { Duration, TelemetryOptions } from '@ballast/shared'
import type { Topology } from './topology.js'

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

/**
 * Options of {@link createBroker}. `meterProvider` and `tracerProvider` (from the shared
 * `TelemetryOptions`) default to the global OpenTelemetry providers: see the README's Telemetry.
 */
export interface BrokerOptions extends TelemetryOptions {
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
   * AMQP heartbeat interval (rounded up to whole seconds; 0 turns heartbeats off). A connection that misses two is dropped and reopened.
   * @default 10_000
   */
  heartbeatInterval?: Duration
  /**
   * Bound on opening one connection.
   * @default 10_000
   */
  connectTimeout?: Duration
  /**
   * Reconnect backoff; a field left out (or `undefined`) keeps its default.
   * @default {@link DEFAULT_RECONNECT_OPTIONS}: `{ initialDelay: 250, maxDelay: 30_000, factor: 2, jitter: 0.2 }`
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
   * How many times one message is sent, the first send included, before its `publish` fails
   * because disconnects left it unconfirmed each time (policy `'resend'`): `maxSendAttempts - 1`
   * resends (1: never resent).
   * @default 11
   */
  maxSendAttempts?: number
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

/** The defaults of {@link ReconnectOptions}. */
export const DEFAULT_RECONNECT_OPTIONS: Readonly<Required<ReconnectOptions>> = Object.freeze({
  initialDelay: 250,
  maxDelay: 30_000,
  factor: 2,
  jitter: 0.2,
})

/** The defaults of {@link BrokerOptions}. */
export const DEFAULT_BROKER_OPTIONS: Readonly<
  Required<Omit<BrokerOptions, 'urls' | 'topology' | keyof TelemetryOptions>>
> = Object.freeze({
  name: 'ballast',
  heartbeatInterval: 10_000,
  connectTimeout: 10_000,
  reconnect: DEFAULT_RECONNECT_OPTIONS,
  confirmWindow: 1000,
  channels: 1,
  maxBuffered: 10_000,
  unconfirmedPolicy: 'resend',
  maxSendAttempts: 11,
  maxMessageBytes: 4 * 1024 * 1024,
  mandatory: true,
  stamp: false,
  shutdownTimeout: 30_000,
})

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

/**
 * The defaults of {@link PublishOptions} that are fixed values (the others depend on the call or
 * the broker: a random UUID, the broker's `mandatory`).
 */
export const DEFAULT_PUBLISH_OPTIONS: Readonly<Required<Pick<PublishOptions, 'persistent'>>> =
  Object.freeze({ persistent: true })

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
  /** Publishes that failed after being accepted (policy `'fail'`, `maxSendAttempts` spent, close). */
  failed: number
  /** Messages waiting in memory now. */
  buffered: number
  /** Messages sent and not yet confirmed now. */
  inFlight: number
  /** Deliveries received by every consumer. */
  consumed: number
  /** Deliveries the broker flagged as redelivered (delivered before without an ack). */
  redelivered: number
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
