import { setTimeout as sleep } from 'node:timers/promises'
import type { ChannelModel, ConfirmChannel, Message, Options } from 'amqplib'
import genericPool, { type Pool } from 'generic-pool'
import {
  BufferFullError,
  InvalidMessageError,
  MqClosedError,
  PublishNackedError,
  PublishUnconfirmedError,
  UnroutableError,
} from '../errors.js'
import { closeSafely } from './closeSafely.js'
import { checkPublish } from './encode.js'

/** One message on its way: buffered, in flight, or waiting to be resent. */
export interface Outgoing {
  exchange: string
  routingKey: string
  content: Buffer
  options: Options.Publish
  resolve: () => void
  reject: (error: Error) => void
  resends: number
}

/** Publisher settings (already validated). */
export interface PublisherSettings {
  channels: number
  confirmWindow: number
  maxBuffered: number
  unconfirmedPolicy: 'resend' | 'fail'
  /** Sends of one message, the first included, before disconnects fail it. */
  maxSendAttempts: number
}

/** Counters the broker's stats() reads. */
export interface PublisherCounters {
  published: number
  confirmed: number
  returned: number
  nacked: number
  resent: number
  failed: number
}

interface ChannelState {
  channel: ConfirmChannel
  /** The pool it was borrowed from. */
  pool: Pool<ChannelState>
  returned: Map<string, string>
  closed: boolean
  /** amqplib's write buffer is full: wait for 'drain'. */
  draining: boolean
  /** Handed back to (or destroyed in) its pool already. */
  returnedToPool: boolean
}

/** A FIFO with O(1) shift. */
class Fifo<T> {
  #items: (T | undefined)[] = []
  #head = 0
  get length(): number {
    return this.#items.length - this.#head
  }
  push(item: T): void {
    this.#items.push(item)
  }
  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head++] = undefined
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return item
  }
  drain(): T[] {
    const rest = this.#items.slice(this.#head) as T[]
    this.#items = []
    this.#head = 0
    return rest
  }
}

/**
 * Confirmed publishing over a pool of confirm channels (generic-pool) on the publisher
 * connection: a bounded window of unconfirmed messages, a bounded buffer in front of it, and
 * messages left unconfirmed by a disconnect resent (or failed) by policy.
 *
 * The channels are borrowed from the pool once per connection and kept (the pool creates,
 * validates and replaces them); a message is written synchronously in `send` when nothing waits
 * before it and the window has room, and each confirm writes the next waiting message.
 */
export class Publisher {
  readonly #settings: PublisherSettings
  readonly counters: PublisherCounters = {
    published: 0,
    confirmed: 0,
    returned: 0,
    nacked: 0,
    resent: 0,
    failed: 0,
  }
  #queue = new Fifo<Outgoing>()
  #resend = new Fifo<Outgoing>()
  #inFlight = 0
  #pool: Pool<ChannelState> | undefined
  /** Channels borrowed from the current pool. */
  #channels: ChannelState[] = []
  #next = 0
  #acquiring = 0
  #refill: NodeJS.Timeout | undefined
  #closed = false
  #failure: Error | undefined
  #idle: Array<() => void> = []
  #writable: Array<() => void> = []

  constructor(settings: PublisherSettings) {
    this.#settings = settings
  }

  get buffered(): number {
    return this.#queue.length + this.#resend.length
  }

  get inFlight(): number {
    return this.#inFlight
  }

  /**
   * Accepts a message; the promise settles when the broker confirmed it (or it failed). A message
   * amqplib could not encode (see {@link checkPublish}) is refused here, alone: nothing is
   * buffered or written, and the channel is not touched.
   */
  send(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: Options.Publish,
    bypassLimit = false,
  ): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    if (this.#closed) return Promise.reject(new MqClosedError('broker', 'publish'))
    try {
      checkPublish(exchange, routingKey, options)
    } catch (error) {
      return Promise.reject(error)
    }
    if (!bypassLimit && this.#queue.length >= this.#settings.maxBuffered) {
      return Promise.reject(
        new BufferFullError(
          `the publish buffer holds ${this.#queue.length} messages ("maxBuffered"); wait for broker.writable() or slow down`,
        ),
      )
    }
    return new Promise<void>((resolve, reject) => {
      const message: Outgoing = {
        exchange,
        routingKey,
        content,
        options,
        resolve,
        reject,
        resends: 0,
      }
      this.counters.published++
      if (
        this.#queue.length === 0 &&
        this.#resend.length === 0 &&
        this.#inFlight < this.#settings.confirmWindow
      ) {
        const state = this.#channel()
        if (state !== undefined) {
          if (!this.#write(state, message)) this.#flush()
          return
        }
      }
      this.#queue.push(message)
      this.#flush()
    })
  }

  /** Resolves when the buffer has room again. */
  writable(): Promise<void> {
    if (this.#queue.length < this.#settings.maxBuffered || this.#closed) return Promise.resolve()
    return new Promise((resolve) => this.#writable.push(resolve))
  }

  /** Resolves when nothing is buffered or in flight. */
  idle(): Promise<void> {
    if (this.buffered === 0 && this.#inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  #checkWaiters(): void {
    if (this.#writable.length > 0 && this.#queue.length < this.#settings.maxBuffered) {
      for (const w of this.#writable.splice(0)) w()
    }
    if (this.#idle.length > 0 && this.buffered === 0 && this.#inFlight === 0) {
      for (const w of this.#idle.splice(0)) w()
    }
  }

  /** A new publisher connection: a fresh channel pool, then whatever waits is sent. */
  attach(connection: ChannelModel): void {
    const old = this.#pool
    if (old !== undefined) void this.#retire(old)
    let alive = true
    connection.once('close', () => {
      alive = false
    })
    const pool: Pool<ChannelState> = genericPool.createPool<ChannelState>(
      {
        create: async () => {
          // generic-pool retries a failed create at once for a waiting acquire: on a dead
          // connection that would spin the microtask queue, so each failure waits a little
          let channel: ConfirmChannel
          try {
            if (!alive) throw new Error('the publisher connection is closed')
            channel = await connection.createConfirmChannel()
          } catch (error) {
            await sleep(100)
            throw error
          }
          const state: ChannelState = {
            channel,
            pool,
            returned: new Map(),
            closed: false,
            draining: false,
            returnedToPool: false,
          }
          channel.on('error', () => {})
          channel.on('close', () => {
            state.closed = true
            this.#lost(state)
          })
          channel.on('drain', () => {
            state.draining = false
            this.#flush()
          })
          channel.on('return', (message: Message) => {
            const id = message.properties.messageId as string | undefined
            if (id !== undefined)
              state.returned.set(
                id,
                String((message.fields as { replyText?: unknown }).replyText ?? 'NO_ROUTE'),
              )
          })
          return state
        },
        destroy: async (state) => {
          if (!state.closed) await closeSafely(state.channel)
        },
        validate: async (state) => !state.closed,
      },
      { max: this.#settings.channels, min: 0, testOnBorrow: true, acquireTimeoutMillis: 5000 },
    )
    this.#pool = pool
    this.#fill()
  }

  /** The publisher connection is gone: channels close, amqplib fails their unconfirmed messages. */
  detach(): void {
    const old = this.#pool
    if (old !== undefined) void this.#retire(old)
  }

  /** Stops using a pool: its channels go back (or are destroyed), then it is drained. */
  #retire(pool: Pool<ChannelState>): Promise<void> {
    if (this.#pool !== pool) return Promise.resolve()
    this.#pool = undefined
    this.#acquiring = 0 // borrows still pending on the old pool are given back when they land
    const channels = this.#channels
    this.#channels = []
    for (const state of channels) this.#giveBack(state)
    return this.#dispose(pool)
  }

  #giveBack(state: ChannelState): void {
    if (state.returnedToPool) return
    state.returnedToPool = true
    const done = state.closed ? state.pool.destroy(state) : state.pool.release(state)
    done.catch(() => {})
  }

  /** A borrowed channel closed (connection lost, or a channel error): replace it. */
  #lost(state: ChannelState): void {
    const i = this.#channels.indexOf(state)
    if (i !== -1) this.#channels.splice(i, 1)
    this.#giveBack(state)
    if (state.pool === this.#pool) this.#fill()
  }

  async #dispose(pool: Pool<ChannelState>): Promise<void> {
    try {
      await pool.drain()
      await pool.clear()
    } catch {
      // the channels are dead already
    }
  }

  /** Borrows channels from the current pool until `channels` are held. */
  #fill(): void {
    const pool = this.#pool
    if (pool === undefined || this.#closed) return
    while (this.#channels.length + this.#acquiring < this.#settings.channels) {
      this.#acquiring++
      pool.acquire().then(
        (state) => {
          if (this.#pool !== pool) {
            this.#giveBack(state)
            return
          }
          this.#acquiring--
          if (this.#closed || state.closed) {
            this.#giveBack(state)
            this.#fill()
            return
          }
          this.#channels.push(state)
          this.#flush()
        },
        () => {
          // the connection went away (attach() starts again) or is slow: try again shortly
          if (this.#pool !== pool) return
          this.#acquiring--
          if (this.#refill === undefined) {
            this.#refill = setTimeout(() => {
              this.#refill = undefined
              this.#fill()
            }, 100)
            this.#refill.unref()
          }
        },
      )
    }
  }

  /** Rejects everything waiting and refuses new messages (topology conflict, closed broker). */
  fail(error: Error): void {
    this.#failure = error
    for (const m of [...this.#resend.drain(), ...this.#queue.drain()]) {
      this.counters.failed++
      m.reject(error)
    }
    this.#checkWaiters()
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#refill !== undefined) clearTimeout(this.#refill)
    const pool = this.#pool
    if (pool !== undefined) {
      // bounded like closeSafely: on a connection gone silent a channel's create never settles,
      // and generic-pool's drain() waits for it; the connection's own close ends it later
      const timer = new AbortController()
      await Promise.race([
        this.#retire(pool),
        sleep(2000, undefined, { ref: false, signal: timer.signal }).catch(() => {}),
      ])
      timer.abort()
    }
    this.fail(new MqClosedError('broker', 'publish'))
  }

  /** A held channel that takes writes now (round robin), if any. */
  #channel(): ChannelState | undefined {
    const channels = this.#channels
    const n = channels.length
    if (n === 1) {
      const only = channels[0] as ChannelState
      return only.draining || only.closed ? undefined : only
    }
    for (let k = 0; k < n; k++) {
      const state = channels[(this.#next + k) % n] as ChannelState
      if (!state.draining && !state.closed) {
        this.#next = (this.#next + k + 1) % n
        return state
      }
    }
    return undefined
  }

  /** Writes waiting messages while the window has room and a channel takes them. */
  #flush(): void {
    while (this.buffered > 0 && this.#inFlight < this.#settings.confirmWindow) {
      const state = this.#channel()
      if (state === undefined) break
      const message = (
        this.#resend.length > 0 ? this.#resend.shift() : this.#queue.shift()
      ) as Outgoing
      this.#write(state, message)
    }
    this.#checkWaiters()
  }

  /** Writes one message; false when the channel wants a pause (its buffer is full) or is gone. */
  #write(state: ChannelState, message: Outgoing): boolean {
    this.#inFlight++
    try {
      const more = state.channel.publish(
        message.exchange,
        message.routingKey,
        message.content,
        message.options,
        (error: unknown) => this.#settle(state, message, error),
      )
      if (!more) state.draining = true
      return more
    } catch (error) {
      this.#inFlight--
      if (!state.closed && (error as Error | null)?.name !== 'IllegalOperationError') {
        // amqplib refused to encode this message (checkPublish missed a case): it threw before
        // writing a byte or taking a delivery tag, so the channel is sound and only this message fails
        this.counters.failed++
        message.reject(
          new InvalidMessageError(
            `the message cannot be sent: ${(error as Error | null)?.message ?? String(error)}`,
            [],
            { cause: error },
          ),
        )
        this.#checkWaiters()
        return true
      }
      // the channel closed under us: nothing was written, so the message goes first next time
      state.closed = true
      this.#resend.push(message)
      this.#lost(state)
      return false
    }
  }

  #settle(state: ChannelState, message: Outgoing, error: unknown): void {
    this.#inFlight--
    if (error === null || error === undefined) {
      const id = message.options.messageId
      const replyText =
        id === undefined || state.returned.size === 0 ? undefined : state.returned.get(id)
      if (replyText !== undefined) {
        state.returned.delete(id as string)
        this.counters.returned++
        message.reject(new UnroutableError(message.exchange, message.routingKey, replyText))
      } else {
        this.counters.confirmed++
        message.resolve()
      }
    } else if ((error as Error).message === 'message nacked') {
      this.counters.nacked++
      message.reject(
        new PublishNackedError('the broker refused the message (basic.nack)', { cause: error }),
      )
    } else {
      // amqplib fails the unconfirmed messages of a closing channel before it emits 'close':
      // take the channel out of rotation now so nothing more is written to it
      state.closed = true
      if (
        this.#settings.unconfirmedPolicy === 'resend' &&
        message.resends + 1 < this.#settings.maxSendAttempts &&
        this.#failure === undefined &&
        !this.#closed
      ) {
        message.resends++
        this.counters.resent++
        this.#resend.push(message)
      } else {
        this.counters.failed++
        message.reject(
          this.#failure ??
            new PublishUnconfirmedError(
              'the channel closed before the broker confirmed the message; it may or may not have been stored',
              { cause: error },
            ),
        )
      }
    }
    if (this.buffered > 0) this.#flush()
    else this.#checkWaiters()
  }
}
