import { setTimeout as sleep } from 'node:timers/promises'
import { type Duration, extractContext } from '@ballast/shared'
import {
  type Attributes,
  type Context,
  context,
  type Histogram,
  isSpanContextValid,
  type Link,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api'
import type {
  Channel,
  ChannelModel,
  ConsumeMessage,
  MessagePropertyHeaders,
  Replies,
} from 'amqplib'
import type { BrokerEvents } from './brokerEvents.js'
import type { Deduplicator } from './deduplicator.js'
import { InvalidMessageError, InvalidMessageIdError, isMqError } from './errors.js'
import { closeSafely } from './internal/closeSafely.js'
import { checkMessageId } from './internal/messageId.js'
import { contextWith, errorType, failSpan, MESSAGING_SYSTEM } from './internal/telemetry.js'
import { type MessageDefinition, messageVersion } from './message.js'
import type { ResolvedQueue, RetryStep } from './topology.js'

/** A message handed to a consumer's handler. */
export interface Delivery<T = unknown> {
  /** The decoded body (JSON parsed, validated against `options.message` when given). */
  readonly body: T
  /** The raw body. */
  readonly content: Buffer
  /** The message id (set on every message we publish). */
  readonly messageId: string | undefined
  /** The AMQP `type` property. */
  readonly type: string | undefined
  /** Application headers. */
  readonly headers: MessagePropertyHeaders
  /** How many times this message was retried through the retry queues before this delivery (0 on the first). */
  readonly attempt: number
  /** Whether the broker delivered it before (to this or another consumer) without an ack. */
  readonly redelivered: boolean
  /** The queue it came from. */
  readonly queue: string
  /** The exchange it was published to. */
  readonly exchange: string
  /** The routing key it was published with. */
  readonly routingKey: string
  /** The raw amqplib message, for anything not covered above. */
  readonly raw: ConsumeMessage
}

/** Handles one delivery; resolving acks it, throwing sends it to retry or to the dead-letter queue. */
export type MessageHandler<T = unknown> = (delivery: Delivery<T>) => Promise<void> | void

/** Options of {@link Broker.consume}. */
export interface ConsumeOptions<T = unknown> {
  /**
   * Messages the broker sends ahead of acks (basic.qos), and so the most handled at once.
   * @default 32
   */
  prefetch?: number
  /**
   * Validates each body against this definition; an invalid one is dead-lettered at once.
   * @default undefined (the JSON-decoded body is passed as it is)
   */
  message?: MessageDefinition<T>
  /**
   * Drops deliveries whose message id was already processed (see {@link idempotencyDeduplicator} and {@link Deduplicator}).
   * An id the store cannot key (empty, not well-formed UTF-8, or refused by it, e.g. by its key pattern) is
   * dead-lettered with an {@link InvalidMessageIdError}; a store error sends the message through the retry
   * queue without counting an attempt.
   * @default undefined (no deduplication: at-least-once)
   */
  idempotency?: Deduplicator
  /**
   * Prefix of the deduplication keys (`<prefix><queue>:<messageId>`).
   * @default 'mq:'
   */
  idempotencyPrefix?: string
  /**
   * How long a delivery whose id another consumer is processing right now waits before it is requeued.
   * @default 1000
   */
  inProgressDelay?: Duration
  /**
   * Consumer tag prefix, shown in the broker's tooling.
   * @default the broker's name
   */
  tag?: string
}

/** The defaults of {@link ConsumeOptions} (`tag` defaults to the broker's name). */
export const DEFAULT_CONSUME_OPTIONS: Readonly<
  Required<Pick<ConsumeOptions, 'prefetch' | 'idempotencyPrefix' | 'inProgressDelay'>>
> &
  ConsumeOptions = Object.freeze({
  prefetch: 32,
  idempotencyPrefix: 'mq:',
  inProgressDelay: 1000,
})

/** Counters of one consumer. */
export interface ConsumerStats {
  /** Deliveries received. */
  consumed: number
  /** Deliveries the broker flagged as redelivered (delivered before, to this or another consumer, without an ack). */
  redelivered: number
  /** Deliveries the handler finished (acked). */
  acked: number
  /** Deliveries sent to a retry queue. */
  retried: number
  /** Deliveries sent to the dead-letter queue (or rejected without requeue). */
  deadLettered: number
  /** Deliveries dropped as duplicates by the idempotency store. */
  duplicates: number
  /** Acks not sent because their channel had closed (the broker redelivers those messages). */
  staleAcks: number
  /** Handler runs going on now. */
  inHand: number
  /** Times the broker cancelled this consumer (queue deleted, node down) and it was restored. */
  cancellations: number
}

/** What a consumer needs from its broker. */
export interface ConsumerHost {
  name: string
  /** Starts each delivery's `process <queue>` span. */
  tracer: Tracer
  /** `messaging.process.duration`. */
  processDuration: Histogram
  queue(name: string): ResolvedQueue | undefined
  republish(
    routingKey: string,
    message: ConsumeMessage,
    headers: Record<string, unknown>,
  ): Promise<void>
  redeclare(connection: ChannelModel): Promise<void>
  /** The consumer connection that is up now, if any: the only one a consumer may attach to. */
  current(): ChannelModel | undefined
  emit<K extends keyof BrokerEvents & string>(event: K, payload: BrokerEvents[K]): void
  onCounter(counter: keyof ConsumerStats): void
}

/** A running consumer; `cancel()` stops it gracefully. */
export interface Consumer {
  /** The queue consumed. */
  readonly queue: string
  /** Counters of this consumer. */
  stats(): ConsumerStats
  /** Stops taking messages, lets those in hand finish and ack, then closes the channel. */
  cancel(): Promise<void>
}

/** A count header (`x-retry-attempt`, `x-delivery-count`): a non-negative integer, else 0. */
function headerCount(headers: MessagePropertyHeaders | undefined, key: string): number {
  const value = headers?.[key]
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^[0-9]{1,9}$/.test(value)
        ? Number(value)
        : Number.NaN
  return Number.isSafeInteger(n) && n >= 0 ? n : 0
}

/** A string header, or `fallback` when it is absent or of another type. */
function headerString(headers: MessagePropertyHeaders | undefined, key: string, fallback: string) {
  const value = headers?.[key]
  return typeof value === 'string' ? value : fallback
}

/** Where a message was first published: kept through every retry and the dead-letter queue. */
function originalRoute(message: ConsumeMessage) {
  const headers = message.properties.headers
  return {
    'x-original-exchange': headerString(headers, 'x-original-exchange', message.fields.exchange),
    'x-original-routing-key': headerString(
      headers,
      'x-original-routing-key',
      message.fields.routingKey,
    ),
  }
}

/** How a delivery ended, as the process span's `ballast.mq.outcome` says it. */
type Outcome = 'ack' | 'retry' | 'dead_letter' | 'duplicate' | 'requeue'

/** The counters that settle a delivery, and the outcome each one means. */
const OUTCOMES: Partial<Record<keyof ConsumerStats, Outcome>> = {
  acked: 'ack',
  retried: 'retry',
  deadLettered: 'dead_letter',
  duplicates: 'duplicate',
}

/** `error.type` of a delivery whose ack or nack was lost with its channel. */
const STALE_ACK = 'stale_ack'

/** The telemetry of one delivery in hand. */
interface DeliveryTrace {
  readonly span: Span
  outcome: Outcome
  /** `error.type` of the failure that decided the outcome, if any. */
  errorType: string | undefined
}

/** First wait before requeueing a message whose republish (or deduplication) failed; doubles up to the cap. */
const REQUEUE_BACKOFF_MS = 250
/** Longest wait before such a requeue. */
const REQUEUE_BACKOFF_MAX_MS = 10_000

function decode(message: ConsumeMessage): unknown {
  const type = message.properties.contentType as string | undefined
  if (type === 'application/json') return JSON.parse(message.content.toString('utf8'))
  if (type?.startsWith('text/')) return message.content.toString('utf8')
  return message.content
}

function describe(error: unknown): { message: string; code: string; stack: string } {
  const e = error instanceof Error ? error : new Error(String(error))
  const raw = (e as { code?: unknown }).code
  const code = typeof raw === 'string' ? raw : e.name
  return { message: e.message.slice(0, 1000), code, stack: (e.stack ?? '').slice(0, 4000) }
}

/** Whether a handler error says a retry cannot help (a ballast error with `retryable: false`, a bad message). */
function permanent(error: unknown): boolean {
  if (error instanceof InvalidMessageError) return true
  if (isMqError(error)) return error.retryable === false && error.code !== 'E_MQ_INVALID_ARGUMENT'
  const brand = (error as Record<symbol, unknown> | null)?.[Symbol.for('ballast.error')]
  return brand !== undefined && (error as { retryable?: unknown }).retryable === false
}

/** Whether a republish failed because of the message itself (the publish check), so no retry can help. */
function unpublishable(error: unknown): boolean {
  if (!isMqError(error)) return false
  return error.code === 'E_MQ_INVALID_MESSAGE' || error.code === 'E_MQ_MESSAGE_TOO_LARGE'
}

/** The settings of one consumer, validated by `Broker.consume()`. */
export interface ConsumerSettings<T> {
  message: MessageDefinition<T> | undefined
  idempotency: Deduplicator | undefined
  prefetch: number
  idempotencyPrefix: string
  inProgressDelayMs: number
  tag: string
}

/** The consumer behind {@link Consumer}: made by `Broker.consume()`, not exported by the package. */
export class ManagedConsumer<T> implements Consumer {
  readonly queue: string
  readonly #handler: MessageHandler<T>
  readonly #options: ConsumerSettings<T>
  readonly #host: ConsumerHost
  readonly #stats: ConsumerStats = {
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
  #channel: Channel | undefined
  #consumerTag: string | undefined
  #connection: ChannelModel | undefined
  #stopping = false
  #inHand = new Set<Promise<void>>()
  #attaching: Promise<void> | undefined
  #onCancel: (() => void) | undefined
  /** Aborted by cancel(): ends backoff waits so their messages go back at once. */
  readonly #stop = new AbortController()
  /** Requeues in a row that followed a failure (republish, store); reset by any ack. */
  #requeueFailures = 0
  /** Deliveries acked or nacked (or whose channel was gone): the others are settled by #deliver. */
  readonly #settled = new WeakSet<ConsumeMessage>()
  /** The span and outcome of each delivery in hand. */
  readonly #traces = new WeakMap<ConsumeMessage, DeliveryTrace>()
  /** The attributes of this queue's `messaging.process.duration` points without an error. */
  readonly #metricAttributes: Attributes

  constructor(
    queue: string,
    handler: MessageHandler<T>,
    options: ConsumerSettings<T>,
    host: ConsumerHost,
  ) {
    this.queue = queue
    this.#handler = handler
    this.#options = options
    this.#host = host
    this.#metricAttributes = {
      'messaging.system': MESSAGING_SYSTEM,
      'messaging.destination.name': queue,
      'messaging.operation.name': 'process',
    }
  }

  stats(): ConsumerStats {
    return { ...this.#stats, inHand: this.#inHand.size }
  }

  /** Moves a counter; with the delivery it settled, records the outcome on the delivery's span. */
  #count(counter: keyof ConsumerStats, message?: ConsumeMessage, error?: unknown): void {
    this.#stats[counter]++
    this.#host.onCounter(counter)
    if (message === undefined) return
    const traced = this.#traces.get(message)
    if (traced === undefined) return
    if (counter === 'staleAcks') {
      // the ack (or nack) never reached the broker: it delivers the message again
      traced.errorType = STALE_ACK
      traced.span.setAttribute('error.type', STALE_ACK)
      traced.span.setStatus({
        code: SpanStatusCode.ERROR,
        message: 'the channel closed before the ack: the broker will deliver the message again',
      })
      return
    }
    const outcome = OUTCOMES[counter]
    if (outcome === undefined) return
    traced.outcome = outcome
    if (error !== undefined) this.#failed(traced, error)
  }

  /** Marks the delivery's span failed with the error that decided its outcome. */
  #failed(traced: DeliveryTrace, error: unknown): void {
    traced.errorType = errorType(error)
    failSpan(traced.span, error)
  }

  /**
   * Starts the CONSUMER span of a delivery, `process <queue>`: its parent is the context the
   * publisher put in the headers (so the trace goes on) and it links to that producer context too,
   * as the messaging conventions ask. The body is never recorded: only its size.
   */
  #startSpan(message: ConsumeMessage, attempt: number): { span: Span; parent: Context } {
    const headers = message.properties.headers
    const parent = extractContext(headers, ROOT_CONTEXT)
    const producer = trace.getSpanContext(parent)
    const links: Link[] | undefined =
      producer !== undefined && isSpanContextValid(producer) ? [{ context: producer }] : undefined
    const attributes: Attributes = {
      'messaging.system': MESSAGING_SYSTEM,
      'messaging.operation.name': 'process',
      'messaging.operation.type': 'process',
      'messaging.destination.name': this.queue,
      'messaging.rabbitmq.destination.routing_key': headerString(
        headers,
        'x-original-routing-key',
        message.fields.routingKey,
      ),
      'messaging.message.body.size': message.content.length,
      'ballast.mq.attempt': attempt,
      'ballast.mq.redelivered': message.fields.redelivered,
    }
    const id = message.properties.messageId
    if (typeof id === 'string') attributes['messaging.message.id'] = id
    const span = this.#host.tracer.startSpan(
      `process ${this.queue}`,
      links === undefined
        ? { kind: SpanKind.CONSUMER, attributes }
        : { kind: SpanKind.CONSUMER, attributes, links },
      parent,
    )
    return { span, parent }
  }

  /** Ends a delivery's span with its outcome and records its duration. */
  #finish(traced: DeliveryTrace, started: number): void {
    const seconds = (performance.now() - started) / 1000
    this.#host.processDuration.record(
      seconds,
      traced.errorType === undefined
        ? this.#metricAttributes
        : { ...this.#metricAttributes, 'error.type': traced.errorType },
    )
    traced.span.setAttribute('ballast.mq.outcome', traced.outcome)
    traced.span.end()
  }

  /** Whether `connection` is still the one to consume on: ours and the broker's live one. */
  #current(connection: ChannelModel): boolean {
    return !this.#stopping && this.#connection === connection && this.#host.current() === connection
  }

  /**
   * Starts consuming on a (new) consumer connection. Errors are retried with backoff until it
   * works, stops, or `connection` is no longer the live one (a stale call is a no-op).
   */
  attach(connection: ChannelModel): Promise<void> {
    // amqplib closes a channel before its connection: a late call may name a connection gone by now
    if (this.#host.current() !== connection) return this.#attaching ?? Promise.resolve()
    this.#connection = connection
    const run = async () => {
      let delay = 100
      while (this.#current(connection)) {
        try {
          await this.open(connection)
          return
        } catch (error) {
          // a connection that went away meanwhile is not an error of ours: its successor attaches
          if (!this.#current(connection)) return
          this.#host.emit('consumer-failed', { queue: this.queue, error })
          // cut short by cancel(), which waits for this loop
          await sleep(delay, undefined, { signal: this.#stop.signal }).catch(() => {})
          delay = Math.min(delay * 2, 5000)
        }
      }
    }
    return this.#track(run())
  }

  /**
   * Holds a (re)start in `#attaching`, so cancel() waits for it and the channel-close timer does not
   * start another; a later one replaces it, and an earlier one ending does not clear the later one.
   */
  #track(work: Promise<void>): Promise<void> {
    const tracked: Promise<void> = work.finally(() => {
      if (this.#attaching === tracked) this.#attaching = undefined
    })
    this.#attaching = tracked
    return tracked
  }

  /** The consumer connection is gone; its channel with it. Acks of deliveries in hand are dropped. */
  detach(): void {
    this.#connection = undefined
    this.#channel = undefined
    this.#consumerTag = undefined
  }

  async open(connection: ChannelModel): Promise<void> {
    this.#connection = connection
    const channel = await connection.createChannel()
    // set once the broker confirmed the consume: a channel closed before that (a 404 for a missing
    // queue) is the caller's failure to handle (attach and #cancelled retry, consume() rejects), and
    // re-opening it from here would leave a consumer nobody holds retrying, or consuming, forever
    let consuming = false
    channel.on('error', () => {})
    channel.on('close', () => {
      if (this.#channel === channel) {
        this.#channel = undefined
        this.#consumerTag = undefined
        if (!consuming) return
        // a channel-only close (connection still up): open a new one. The connection's own close
        // comes after this one, so check again when the timer fires, by identity
        setTimeout(() => {
          if (
            this.#current(connection) &&
            this.#channel === undefined &&
            this.#attaching === undefined
          )
            void this.attach(connection)
        }, 100).unref()
      }
    })
    let reply: Replies.Consume
    try {
      await channel.prefetch(this.#options.prefetch)
      this.#channel = channel
      reply = await channel.consume(
        this.queue,
        (message) => {
          if (message === null) this.#cancelled(channel, connection)
          else this.#deliver(channel, message)
        },
        {
          noAck: false,
          consumerTag: `${this.#options.tag}.${this.queue}.${Math.random().toString(36).slice(2, 10)}`,
        },
      )
    } catch (error) {
      if (this.#channel === channel) this.#channel = undefined
      void closeSafely(channel)
      throw error
    }
    if (this.#stopping) {
      // cancel() came while this start was under way: do not leave a consumer it cannot see
      if (this.#channel === channel) this.#channel = undefined
      await closeSafely(channel)
      return
    }
    consuming = true
    this.#consumerTag = reply.consumerTag
    this.#host.emit('consumer-started', { queue: this.queue, consumerTag: reply.consumerTag })
  }

  /** The broker cancelled us (queue deleted, its node went down): re-declare and consume again. */
  #cancelled(channel: Channel, connection: ChannelModel): void {
    if (this.#channel !== channel) return
    this.#count('cancellations')
    this.#channel = undefined
    this.#consumerTag = undefined
    this.#host.emit('consumer-cancelled', { queue: this.queue })
    void closeSafely(channel)
    if (this.#stopping) return
    void this.#track(
      (async () => {
        let delay = 100
        while (this.#current(connection)) {
          try {
            await this.#host.redeclare(connection)
            await this.open(connection)
            return
          } catch (error) {
            if (!this.#current(connection)) return
            this.#host.emit('consumer-failed', { queue: this.queue, error })
            await sleep(delay, undefined, { signal: this.#stop.signal }).catch(() => {})
            delay = Math.min(delay * 2, 5000)
          }
        }
      })(),
    )
  }

  #deliver(channel: Channel, message: ConsumeMessage): void {
    // stopping: leave it unacked; closing the channel hands it back to the broker
    if (this.#stopping) return
    this.#count('consumed')
    if (message.fields.redelivered) this.#count('redelivered')
    const started = performance.now()
    const { span, parent } = this.#startSpan(
      message,
      headerCount(message.properties.headers, 'x-retry-attempt'),
    )
    const traced: DeliveryTrace = { span, outcome: 'requeue', errorType: undefined }
    this.#traces.set(message, traced)
    // the handler, and whatever it publishes, runs under the delivery's span
    const work = context
      .with(contextWith(parent, span), () => this.#handle(channel, message, traced))
      .catch(async (error) => {
        this.#host.emit('consumer-failed', { queue: this.queue, error })
        if (traced.errorType === undefined) this.#failed(traced, error)
        // never leave a delivery unsettled: it would hold a prefetch slot until the channel closes
        if (!this.#settled.has(message)) {
          await this.#backoff()
          this.#nack(channel, message, true)
        }
      })
      .finally(() => this.#finish(traced, started))
    this.#inHand.add(work)
    void work.finally(() => {
      this.#inHand.delete(work)
      if (this.#inHand.size === 0) this.#onCancel?.()
    })
  }

  /** Acks on the channel the message came from, and only if that channel still lives. */
  #ack(channel: Channel, message: ConsumeMessage): void {
    this.#settled.add(message)
    // a message went through (handled, retried or dead-lettered): the next failure starts the
    // requeue backoff from its first step again
    this.#requeueFailures = 0
    if (this.#channel !== channel) {
      this.#count('staleAcks', message)
      return
    }
    try {
      channel.ack(message)
    } catch {
      this.#count('staleAcks', message)
    }
  }

  #nack(channel: Channel, message: ConsumeMessage, requeue: boolean): void {
    this.#settled.add(message)
    if (this.#channel !== channel) {
      this.#count('staleAcks', message)
      return
    }
    try {
      channel.nack(message, false, requeue)
    } catch {
      this.#count('staleAcks', message)
    }
  }

  async #handle(channel: Channel, message: ConsumeMessage, traced: DeliveryTrace): Promise<void> {
    const headers = message.properties.headers ?? {}
    const attempt = headerCount(headers, 'x-retry-attempt')
    let body: unknown
    try {
      body = decode(message)
      const definition = this.#options.message
      if (definition !== undefined) {
        const type = message.properties.type as string | undefined
        if (type !== undefined && type !== definition.type) {
          throw new InvalidMessageError(`expected a "${definition.type}" message, got "${type}"`)
        }
        const version = messageVersion(headers['x-message-version'], definition.version)
        body = await definition.parse(body, version)
      }
    } catch (error) {
      const invalid =
        error instanceof InvalidMessageError
          ? error
          : new InvalidMessageError(`undecodable message: ${(error as Error).message}`, [], {
              cause: error,
            })
      this.#failed(traced, invalid)
      await this.#deadLetter(channel, message, invalid, attempt)
      return
    }

    const dedupe = this.#options.idempotency
    const id = message.properties.messageId as string | undefined
    // a message with no id cannot be deduplicated: like an id the store refuses, it is
    // dead-lettered with the reason rather than processed with no once-only guarantee
    let key: string | undefined
    if (dedupe !== undefined) {
      let state: Awaited<ReturnType<typeof dedupe.begin>>
      try {
        key = `${this.#options.idempotencyPrefix}${this.queue}:${checkMessageId(id)}`
        state = await dedupe.begin(key)
      } catch (error) {
        if (error instanceof InvalidMessageIdError || permanent(error)) {
          // the id itself is refused (e.g. by the idempotency key pattern): no retry can help
          const refused =
            error instanceof InvalidMessageIdError
              ? error
              : new InvalidMessageIdError(
                  `message id refused by the deduplicator: ${(error as Error)?.message}`,
                  { cause: error },
                )
          this.#failed(traced, refused)
          await this.#deadLetter(channel, message, refused, attempt)
          return
        }
        // the store is down or failing: try again later through the retry queue
        this.#failed(traced, error)
        this.#host.emit('consumer-failed', { queue: this.queue, error })
        await this.#retryLater(channel, message, error, attempt)
        return
      }
      if (state === 'completed') {
        this.#count('duplicates', message)
        this.#host.emit('duplicate-skipped', { queue: this.queue, messageId: id })
        this.#ack(channel, message)
        return
      }
      if (state === 'in-progress') {
        // another consumer has it right now (or died holding it until the lock expires)
        await sleep(this.#options.inProgressDelayMs, undefined, {
          signal: this.#stop.signal,
        }).catch(() => {})
        this.#nack(channel, message, true)
        return
      }
    }

    const delivery: Delivery<T> = {
      body: body as T,
      content: message.content,
      messageId: id,
      type: message.properties.type as string | undefined,
      headers,
      attempt,
      redelivered: message.fields.redelivered,
      queue: this.queue,
      exchange: headerString(headers, 'x-original-exchange', message.fields.exchange),
      routingKey: headerString(headers, 'x-original-routing-key', message.fields.routingKey),
      raw: message,
    }
    try {
      await this.#handler(delivery)
    } catch (error) {
      this.#failed(traced, error)
      if (dedupe !== undefined && key !== undefined) await dedupe.release(key).catch(() => {})
      this.#host.emit('handler-failed', {
        queue: this.queue,
        messageId: id,
        attempt: attempt + 1, // from 1, as documented: `attempt` counts the retries before it
        error,
      })
      await this.#fail(channel, message, error, attempt)
      return
    }
    if (dedupe !== undefined && key !== undefined) {
      try {
        await dedupe.complete(key)
      } catch (error) {
        // the handler's work is done: ack it rather than run it again; only a later duplicate
        // delivery of this id can be reprocessed (the claim lapses with its lease)
        this.#host.emit('consumer-failed', { queue: this.queue, error })
      }
    }
    this.#count('acked', message)
    this.#ack(channel, message)
  }

  async #fail(
    channel: Channel,
    message: ConsumeMessage,
    error: unknown,
    attempt: number,
  ): Promise<void> {
    const queue = this.#host.queue(this.queue)
    if (queue === undefined) {
      // not ours: the queue's own dead-letter settings decide
      this.#count('deadLettered', message)
      this.#nack(channel, message, false)
      return
    }
    const step = queue.retries[attempt]
    const deliveryCount = headerCount(message.properties.headers, 'x-delivery-count')
    if (queue.retries.length === 0 && queue.deliveryLimit !== undefined && !permanent(error)) {
      // quorum queue counting deliveries itself: requeue until the limit, then dead-letter with the error
      if (deliveryCount + 1 < queue.deliveryLimit) {
        this.#nack(channel, message, true)
        return
      }
      await this.#deadLetter(channel, message, error, attempt)
      return
    }
    if (step === undefined || permanent(error)) {
      await this.#deadLetter(channel, message, error, attempt)
      return
    }
    await this.#sendToRetry(channel, message, step, error, attempt + 1)
  }

  async #deadLetter(
    channel: Channel,
    message: ConsumeMessage,
    error: unknown,
    attempt: number,
  ): Promise<void> {
    const queue = this.#host.queue(this.queue)
    const info = describe(error)
    if (queue?.deadLetterQueue === undefined) {
      this.#count('deadLettered', message)
      this.#host.emit('dead-lettered', {
        queue: this.queue,
        messageId: message.properties.messageId,
        error,
      })
      this.#nack(channel, message, false)
      return
    }
    try {
      await this.#host.republish(queue.deadLetterQueue, message, {
        'x-retry-attempt': attempt,
        'x-error': info.message,
        'x-error-code': info.code,
        'x-error-stack': info.stack,
        'x-failed-at': new Date().toISOString(),
        'x-original-queue': this.queue,
        ...originalRoute(message),
      })
    } catch (republishError) {
      await this.#requeueAfterFailure(channel, message, republishError)
      return
    }
    this.#count('deadLettered', message)
    this.#host.emit('dead-lettered', {
      queue: this.queue,
      messageId: message.properties.messageId,
      error,
    })
    this.#ack(channel, message)
  }

  /** Waits before a requeue after a failure: 250 ms doubling to 10 s, cut short by cancel(). */
  async #backoff(): Promise<void> {
    const delay = Math.min(REQUEUE_BACKOFF_MS * 2 ** this.#requeueFailures, REQUEUE_BACKOFF_MAX_MS)
    this.#requeueFailures = Math.min(this.#requeueFailures + 1, 16)
    await sleep(delay, undefined, { signal: this.#stop.signal }).catch(() => {})
  }

  /**
   * A republish (to a retry or dead-letter queue) failed, e.g. the publisher is down: requeue the
   * message after a backoff, so it does not spin in a hot redelivery loop meanwhile. A message the
   * publish check refuses is rejected instead (see {@link unpublishable}).
   */
  async #requeueAfterFailure(channel: Channel, message: ConsumeMessage, error: unknown) {
    this.#host.emit('consumer-failed', { queue: this.queue, error })
    if (unpublishable(error)) {
      // this message can never be republished (e.g. its headers with ours are over what amqplib
      // encodes): requeueing would loop forever. Reject it instead: the queue's own dead-letter
      // exchange takes it as it was sent (with x-death), or the broker drops it if there is none
      this.#count('deadLettered', message)
      this.#host.emit('dead-lettered', {
        queue: this.queue,
        messageId: message.properties.messageId,
        error,
      })
      this.#nack(channel, message, false)
      return
    }
    await this.#backoff()
    this.#nack(channel, message, true)
  }

  /**
   * The deduplication store failed (not the message): send the message through the retry queue of
   * its attempt (the last one once they are spent) without counting an attempt, so an outage delays
   * messages but does not dead-letter them. Without retry queues: requeue after a backoff.
   */
  async #retryLater(
    channel: Channel,
    message: ConsumeMessage,
    error: unknown,
    attempt: number,
  ): Promise<void> {
    const retries = this.#host.queue(this.queue)?.retries ?? []
    const step = retries[Math.min(attempt, retries.length - 1)]
    if (step === undefined) {
      await this.#backoff()
      this.#nack(channel, message, true)
      return
    }
    await this.#sendToRetry(channel, message, step, error, attempt)
  }

  /**
   * Republishes the message to retry queue `step` as attempt `attempt`, with the error and where
   * it was first published, then acks it; a failed republish requeues it after a backoff.
   */
  async #sendToRetry(
    channel: Channel,
    message: ConsumeMessage,
    step: RetryStep,
    error: unknown,
    attempt: number,
  ): Promise<void> {
    const info = describe(error)
    try {
      await this.#host.republish(step.queue, message, {
        'x-retry-attempt': attempt,
        'x-last-error': info.message,
        'x-last-error-code': info.code,
        ...originalRoute(message),
      })
    } catch (republishError) {
      await this.#requeueAfterFailure(channel, message, republishError)
      return
    }
    this.#count('retried', message)
    this.#host.emit('retried', {
      queue: this.queue,
      messageId: message.properties.messageId,
      attempt,
      delayMs: step.delay,
    })
    this.#ack(channel, message)
  }

  async cancel(timeoutMs = 30_000): Promise<void> {
    if (this.#stopping) return
    this.#stopping = true
    this.#stop.abort()
    // one deadline for every wait below: on a connection gone silent the broker never answers
    // basic.cancel, and only missed heartbeats (2x heartbeat) would end that wait
    const timer = new AbortController()
    const deadline = sleep(timeoutMs, undefined, { ref: false, signal: timer.signal }).catch(
      () => {},
    )
    const channel = this.#channel
    const tag = this.#consumerTag
    if (channel !== undefined && tag !== undefined)
      await Promise.race([channel.cancel(tag).catch(() => {}), deadline])
    if (this.#attaching !== undefined)
      await Promise.race([this.#attaching.catch(() => {}), deadline])
    if (this.#inHand.size > 0) {
      await Promise.race([
        new Promise<void>((resolve) => {
          this.#onCancel = resolve
        }),
        deadline,
      ])
    }
    timer.abort()
    const current = this.#channel
    this.#channel = undefined
    if (current !== undefined) await closeSafely(current)
    this.#connection = undefined
  }
}
