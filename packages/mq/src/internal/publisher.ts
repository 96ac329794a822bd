import { setTimeout as sleep } from 'node:timers/promises'
import type { ChannelModel, ConfirmChannel, Message, Options } from 'amqplib'
import genericPool, { type Pool } from 'generic-pool'
import {
  BrokerClosedError,
  BufferFullError,
  PublishNackedError,
  PublishUnconfirmedError,
  UnroutableError,
} from '../errors.js'

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
  maxResends: number
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
  returned: Map<string, string>
  closed: boolean
  draining: Promise<void> | undefined
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
  #pumping = false
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

  /** Accepts a message; the promise settles when the broker confirmed it (or it failed). */
  send(
    message: Omit<Outgoing, 'resolve' | 'reject' | 'resends'>,
    bypassLimit = false,
  ): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    if (this.#closed) return Promise.reject(new BrokerClosedError())
    if (!bypassLimit && this.#queue.length >= this.#settings.maxBuffered) {
      return Promise.reject(
        new BufferFullError(
          `the publish buffer holds ${this.#queue.length} messages ("maxBuffered"); wait for broker.writable() or slow down`,
        ),
      )
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ ...message, resolve, reject, resends: 0 })
      this.counters.published++
      this.#pump()
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
    let alive = true
    connection.once('close', () => {
      alive = false
    })
    this.#pool = genericPool.createPool<ChannelState>(
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
            returned: new Map(),
            closed: false,
            draining: undefined,
          }
          channel.on('error', () => {})
          channel.on('close', () => {
            state.closed = true
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
          if (!state.closed) await state.channel.close().catch(() => {})
        },
        validate: async (state) => !state.closed,
      },
      { max: this.#settings.channels, min: 0, testOnBorrow: true, acquireTimeoutMillis: 5000 },
    )
    if (old !== undefined) void this.#dispose(old)
    this.#pump()
  }

  /** The publisher connection is gone: channels close, amqplib fails their unconfirmed messages. */
  detach(): void {
    const old = this.#pool
    this.#pool = undefined
    if (old !== undefined) void this.#dispose(old)
  }

  async #dispose(pool: Pool<ChannelState>): Promise<void> {
    try {
      await pool.drain()
      await pool.clear()
    } catch {
      // the channels are dead already
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
    const pool = this.#pool
    this.#pool = undefined
    if (pool !== undefined) await this.#dispose(pool)
    this.fail(new BrokerClosedError())
  }

  #next(): Outgoing | undefined {
    return this.#resend.length > 0 ? this.#resend.shift() : this.#queue.shift()
  }

  #pump(): void {
    if (this.#pumping || this.#pool === undefined) return
    if (this.buffered === 0 || this.#inFlight >= this.#settings.confirmWindow) return
    this.#pumping = true
    void this.#drain().finally(() => {
      this.#pumping = false
      if (
        this.#pool !== undefined &&
        this.buffered > 0 &&
        this.#inFlight < this.#settings.confirmWindow
      ) {
        setImmediate(() => this.#pump())
      }
    })
  }

  async #drain(): Promise<void> {
    while (this.buffered > 0 && this.#inFlight < this.#settings.confirmWindow) {
      const pool = this.#pool
      if (pool === undefined) return
      let state: ChannelState
      try {
        state = await pool.acquire()
      } catch {
        return // the connection went away; attach() pumps again
      }
      try {
        while (
          this.buffered > 0 &&
          this.#inFlight < this.#settings.confirmWindow &&
          !state.closed &&
          this.#pool === pool
        ) {
          const message = this.#next() as Outgoing
          if (!this.#write(state, message)) break
        }
      } finally {
        if (state.closed) await pool.destroy(state).catch(() => {})
        else await pool.release(state).catch(() => {})
      }
      if (state.draining !== undefined) await state.draining
      this.#checkWaiters()
    }
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
      if (!more && state.draining === undefined) {
        state.draining = new Promise<void>((resolve) => {
          const done = () => {
            state.draining = undefined
            state.channel.off('drain', done)
            state.channel.off('close', done)
            resolve()
          }
          state.channel.once('drain', done)
          state.channel.once('close', done)
        })
        return false
      }
      return true
    } catch {
      // the channel closed under us: nothing was written, so the message goes first next time
      this.#inFlight--
      state.closed = true
      this.#resend.push(message)
      return false
    }
  }

  #settle(state: ChannelState, message: Outgoing, error: unknown): void {
    this.#inFlight--
    const id = message.options.messageId
    if (error === null || error === undefined) {
      const replyText = id === undefined ? undefined : state.returned.get(id)
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
    } else if (
      this.#settings.unconfirmedPolicy === 'resend' &&
      message.resends < this.#settings.maxResends &&
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
    if (this.#pool !== undefined && !this.#pumping) this.#pump()
    this.#checkWaiters()
  }
}
