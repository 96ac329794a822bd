import { heartbeat, MESSAGE_TYPE, type OutgoingMessage } from './busMessages.js'
import type { RedisClient } from './l2.js'

/** Message types: keys, tags, clear, heartbeat, filled (a lock holder stored the value). */
export type BusType = 'k' | 'g' | 'c' | 'h' | 'f'

export interface BusMessage {
  /** Origin instance id. */
  o: string
  /** Origin's sequence number: consecutive, so a receiver can see that it missed one. */
  s: number
  t: BusType
  k?: string[]
  /** For `k` from a set: the version written per key ('' for none). */
  v?: string[]
  g?: string[]
  /** New generation, for `c`. */
  n?: number
}

/** Longest origin id accepted (ours are 8 characters). */
const MAX_ORIGIN_LENGTH = 64
/**
 * Origins whose sequence numbers are tracked; forged origins cannot grow the map past it. The
 * origin heard from least recently is forgotten first (a live instance heartbeats), and once
 * any was forgotten, an unknown origin that does not start at 1 counts as a gap: it may be one
 * whose missed message can no longer be seen.
 */
const MAX_TRACKED_ORIGINS = 10_000
const TYPES: ReadonlySet<string> = new Set(['k', 'g', 'c', 'h', 'f'])

/** Keys, tags or a clear: the messages that invalidate (not heartbeats, not a lock holder's fill). */
function isInvalidation(type: BusType): boolean {
  return (
    type === MESSAGE_TYPE.keysInvalidated ||
    type === MESSAGE_TYPE.tagsInvalidated ||
    type === MESSAGE_TYPE.namespaceCleared
  )
}

function isStringArray(value: unknown): value is string[] {
  if (!Array.isArray(value)) return false
  for (const item of value) if (typeof item !== 'string') return false
  return true
}

/**
 * A bus message from the text received on the channel, or the reason it is not one. Anyone
 * who can reach Redis can publish there, so every field is checked: the handlers get only
 * the shapes they expect (`k`/`f` with a string array of keys, `v` as long as `k`, `g` with a
 * string array of tags, `c` with a safe integer generation).
 */
export function parseBusMessage(text: string): BusMessage | string {
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch {
    return 'not JSON'
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return 'not an object'
  const m = data as Record<string, unknown>
  if (typeof m.o !== 'string' || m.o.length === 0 || m.o.length > MAX_ORIGIN_LENGTH)
    return 'bad origin'
  if (typeof m.s !== 'number' || !Number.isSafeInteger(m.s) || m.s < 0) return 'bad sequence'
  if (typeof m.t !== 'string' || !TYPES.has(m.t)) return 'bad type'
  const message: BusMessage = { o: m.o, s: m.s, t: m.t as BusType }
  switch (m.t) {
    case 'k':
    case 'f':
      if (!isStringArray(m.k)) return 'bad keys'
      message.k = m.k
      if (m.t === 'k' && m.v !== undefined) {
        if (!isStringArray(m.v) || m.v.length !== m.k.length) return 'bad versions'
        message.v = m.v
      }
      return message
    case 'g':
      if (!isStringArray(m.g)) return 'bad tags'
      message.g = m.g
      return message
    case 'c':
      if (typeof m.n !== 'number' || !Number.isSafeInteger(m.n) || m.n < 0) return 'bad generation'
      message.n = m.n
      return message
    default:
      return message
  }
}

export interface BusHandlers {
  /** A message from another instance (own messages are only used for heartbeats). */
  message(message: BusMessage): void
  /** A message from `origin` was missed: its invalidations cannot be trusted. */
  gap(origin: string): void
  /** The subscription is confirmed working (own heartbeat came back) after being down. */
  up(): void
  /** The subscription is lost or silent. */
  down(reason: string): void
  /** A message was malformed (or its handling threw): it was dropped. */
  rejected(reason: string): void
}

export interface BusOptions {
  client: RedisClient
  subscriber: RedisClient | undefined
  channel: string
  instanceId: string
  heartbeatInterval: number
  heartbeatTimeout: number
  /** Sends a publish through the L2 guard (breaker and timeout); `heartbeat` for the bus's own echo. */
  publish(channel: string, message: string, heartbeat: boolean): Promise<void>
  handlers: BusHandlers
}

/**
 * Invalidation over Redis pub/sub (sharded pub/sub on a Cluster). Healthy only while the
 * instance's own heartbeats come back through the subscription, so a connection that is
 * silently dead (black-holed) is noticed within `heartbeatTimeout`.
 */
export class Bus {
  readonly #options: BusOptions
  readonly #subscriber: RedisClient
  readonly #ownsSubscriber: boolean
  readonly #isCluster: boolean
  /** Last sequence number per origin, in the order origins were last heard from. */
  readonly #lastSeq = new Map<string, number>()
  /** Whether an origin was ever dropped from #lastSeq to make room. */
  #forgotten = false
  #seq = 0
  #healthy = false
  /** Own sequence number when the bus went down: only a later heartbeat's echo proves it works again. */
  #downSeq = 0
  #lastHeartbeat = 0
  #timer: NodeJS.Timeout | undefined
  #closed = false
  #published = 0
  #received = 0
  #gaps = 0
  #rejected = 0
  #invalidationsPublished = 0
  #invalidationsReceived = 0
  readonly #listener: (channel: string | Buffer, message: string | Buffer) => void

  constructor(options: BusOptions) {
    this.#options = options
    this.#isCluster = (options.client as { isCluster?: boolean }).isCluster === true
    if (options.subscriber !== undefined) {
      this.#subscriber = options.subscriber
      this.#ownsSubscriber = false
    } else if (this.#isCluster) {
      this.#subscriber = (options.client as import('ioredis').Cluster).duplicate(undefined, {
        shardedSubscribers: true,
      })
      this.#ownsSubscriber = true
    } else {
      this.#subscriber = (options.client as import('ioredis').Redis).duplicate()
      this.#ownsSubscriber = true
    }
    this.#listener = (channel, message) => {
      if (String(channel) !== options.channel) return
      // this runs inside ioredis's data handler: a throw here would take the process down
      try {
        this.#onMessage(String(message))
      } catch (error) {
        this.#reject(`handling failed: ${error instanceof Error ? error.message : String(error)}`)
      }
    }
    this.#subscriber.on(this.#isCluster ? 'smessage' : 'message', this.#listener)
    this.#subscriber.on('close', () => this.#down('subscriber connection closed'))
    this.#subscriber.on('-subscriber', () => this.#down('a shard subscriber was lost'))
    this.#subscriber.on('error', () => {
      // ioredis reconnects by itself; the heartbeat decides when we trust the bus again
    })
  }

  get healthy(): boolean {
    return this.#healthy
  }

  stats(): {
    healthy: boolean
    published: number
    received: number
    gaps: number
    rejected: number
    invalidationsPublished: number
    invalidationsReceived: number
  } {
    return {
      healthy: this.#healthy,
      published: this.#published,
      received: this.#received,
      gaps: this.#gaps,
      rejected: this.#rejected,
      invalidationsPublished: this.#invalidationsPublished,
      invalidationsReceived: this.#invalidationsReceived,
    }
  }

  #reject(reason: string): void {
    this.#rejected++
    try {
      this.#options.handlers.rejected(reason)
    } catch {
      // a listener's failure must not escape into ioredis either
    }
  }

  /** Subscribes and starts the heartbeat; the bus turns healthy when the first heartbeat returns. */
  async start(): Promise<void> {
    this.#subscriber.on('ready', () => void this.#subscribe())
    await this.#subscribe()
    this.#lastHeartbeat = Date.now()
    this.#timer = setInterval(() => this.#tick(), this.#options.heartbeatInterval)
    this.#timer.unref()
    this.#heartbeat()
  }

  /** Publishes; the sequence number is consumed even if the publish fails, so receivers see the gap. */
  async publish(outgoing: OutgoingMessage): Promise<void> {
    const message: BusMessage = { o: this.#options.instanceId, s: ++this.#seq, ...outgoing }
    const heartbeat = outgoing.t === MESSAGE_TYPE.heartbeat
    await this.#options.publish(this.#options.channel, JSON.stringify(message), heartbeat)
    this.#published++
    if (isInvalidation(outgoing.t)) this.#invalidationsPublished++
  }

  /**
   * Like {@link Bus.publish}, but `send` delivers the message, so that the caller can send it
   * with its own commands in one round trip. The sequence number is consumed either way.
   */
  async publishVia(
    outgoing: OutgoingMessage,
    send: (channel: string, message: string) => Promise<void>,
  ): Promise<void> {
    const message: BusMessage = { o: this.#options.instanceId, s: ++this.#seq, ...outgoing }
    await send(this.#options.channel, JSON.stringify(message))
    this.#published++
    if (isInvalidation(outgoing.t)) this.#invalidationsPublished++
  }

  /** SUBSCRIBE is idempotent: sent at start, on every (re)connection and while unhealthy. */
  async #subscribe(): Promise<void> {
    if (this.#closed) return
    const sub = this.#subscriber as import('ioredis').Redis
    try {
      if (this.#isCluster) await sub.ssubscribe(this.#options.channel)
      else await sub.subscribe(this.#options.channel)
      if (!this.#healthy) this.#heartbeat() // confirm the subscription now rather than at the next tick
    } catch {
      // not connected yet: retried on 'ready' and by the heartbeat
    }
  }

  #heartbeat(): void {
    if (this.#closed) return
    this.publish(heartbeat()).catch(() => this.#down('heartbeat could not be published'))
  }

  #tick(): void {
    if (this.#healthy && Date.now() - this.#lastHeartbeat > this.#options.heartbeatTimeout) {
      this.#down('heartbeat not echoed in time')
    }
    if (!this.#healthy) void this.#subscribe()
    this.#heartbeat()
  }

  /**
   * Something suggests messages may have been missed (an L2 call failed: the subscription may
   * have dropped with it). L1 stops being trusted until a heartbeat sent after now comes back.
   */
  suspect(reason: string): void {
    this.#down(reason)
  }

  #down(reason: string): void {
    if (!this.#healthy || this.#closed) return
    this.#healthy = false
    this.#downSeq = this.#seq
    this.#options.handlers.down(reason)
  }

  #onMessage(text: string): void {
    const message = parseBusMessage(text)
    if (typeof message === 'string') {
      this.#reject(message)
      return
    }
    if (message.o === this.#options.instanceId) {
      if (message.t === MESSAGE_TYPE.heartbeat) {
        this.#lastHeartbeat = Date.now()
        if (!this.#healthy && !this.#closed && message.s > this.#downSeq) {
          this.#healthy = true
          this.#options.handlers.up()
        }
      }
      return
    }
    this.#received++
    const last = this.#lastSeq.get(message.o)
    if (last !== undefined)
      this.#lastSeq.delete(message.o) // set again below: now the most recent
    else if (this.#lastSeq.size >= MAX_TRACKED_ORIGINS) {
      // a flood of forged origins must not make us forget everyone (a gap would go unseen)
      this.#lastSeq.delete(this.#lastSeq.keys().next().value as string)
      this.#forgotten = true
    }
    this.#lastSeq.set(message.o, message.s)
    const missed = last === undefined ? this.#forgotten && message.s > 1 : message.s > last + 1
    if (missed) {
      this.#gaps++
      this.#options.handlers.gap(message.o)
    }
    if (isInvalidation(message.t)) this.#invalidationsReceived++
    if (message.t !== MESSAGE_TYPE.heartbeat) this.#options.handlers.message(message)
  }

  async close(): Promise<void> {
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#subscriber.off(this.#isCluster ? 'smessage' : 'message', this.#listener)
    if (this.#ownsSubscriber) {
      this.#subscriber.disconnect()
    } else {
      const sub = this.#subscriber as import('ioredis').Redis
      try {
        if (this.#isCluster) await sub.sunsubscribe(this.#options.channel)
        else await sub.unsubscribe(this.#options.channel)
      } catch {
        // the user's subscriber is theirs to close
      }
    }
  }
}
