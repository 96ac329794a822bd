import { setTimeout as sleep } from 'node:timers/promises'
import { Emitter } from '@ballast/shared'
import amqp, { type Channel, type ChannelModel } from 'amqplib'
import { MqClosedError, TopologyConflictError } from '../errors.js'
import type { ResolvedTopology } from '../topology.js'
import { closeSafely } from './closeSafely.js'

/** Reconnect backoff. */
export interface Backoff {
  initialDelay: number
  maxDelay: number
  factor: number
  jitter: number
}

/** Settings of one managed connection. */
export interface ConnectionSettings {
  role: 'publisher' | 'consumer'
  urls: readonly string[]
  heartbeatMs: number
  connectTimeoutMs: number
  backoff: Backoff
  name: string
  topology: ResolvedTopology
}

/** What a managed connection reports. */
export interface ConnectionEvents {
  connect: { connection: ChannelModel; url: string; epoch: number }
  disconnect: { error: Error | undefined; epoch: number }
  reconnecting: { attempt: number; delayMs: number; error: Error | undefined }
  blocked: { reason: string }
  unblocked: Record<string, never>
  failed: { error: Error }
}

/** Delay of reconnect `attempt` (1-based): exponential, capped, with +-jitter. */
export function backoffDelay(backoff: Backoff, attempt: number, random = Math.random): number {
  const base = Math.min(
    backoff.maxDelay,
    backoff.initialDelay * backoff.factor ** Math.max(0, attempt - 1),
  )
  const spread = base * backoff.jitter
  return Math.max(0, Math.min(backoff.maxDelay, Math.round(base - spread + random() * 2 * spread)))
}

function withHeartbeat(url: string, heartbeatMs: number): string {
  const parsed = new URL(url)
  if (!parsed.searchParams.has('heartbeat')) {
    parsed.searchParams.set('heartbeat', String(Math.ceil(heartbeatMs / 1000)))
  }
  return parsed.toString()
}

/** What the URL parser ignores: tabs and newlines anywhere, spaces and C0 controls around the URL. */
function trimLikeUrlParser(url: string): string {
  const text = url.replace(/[\t\n\r]/g, '')
  let start = 0
  let end = text.length
  while (start < end && text.charCodeAt(start) <= 0x20) start++
  while (end > start && text.charCodeAt(end - 1) <= 0x20) end--
  return text.slice(start, end)
}

/** A URL's scheme and the slashes after it, as a person writes them. */
const SCHEME = /^[a-z][a-z\d+.-]*:[/\\]*/i

/**
 * A URL as every event, error and log line of the package shows it: without user name, password,
 * query or fragment; `(invalid url)` when it does not parse, so a malformed URL is never echoed.
 *
 * Everything from the scheme to the last `@` goes, whatever a parser makes of it: a password
 * typed raw with a `/`, `?` or `#` in it would otherwise land in the path, query or fragment
 * (`amqp://user:1/secret@host` parses as host `user`, port 1, path `/secret@host`).
 */
export function redact(url: string): string {
  const text = trimLikeUrlParser(String(url))
  const at = text.lastIndexOf('@')
  let stripped = text
  if (at !== -1) {
    const scheme = SCHEME.exec(text)
    if (scheme === null) return '(invalid url)'
    stripped = scheme[0] + text.slice(at + 1)
  }
  try {
    const parsed = new URL(stripped)
    parsed.password = ''
    parsed.username = ''
    parsed.search = ''
    parsed.hash = ''
    return parsed.toString()
  } catch {
    return '(invalid url)'
  }
}

function closeCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'number' ? code : undefined
}

/** The parts of amqplib's connection that {@link batchWrites} uses (not in amqplib's types). */
interface Internals {
  connection?: {
    stream?: { cork?: unknown; uncork?: unknown }
    muxer?: { _readIncoming?: unknown }
  }
}

/**
 * Makes amqplib send what it writes in one pass as one socket write.
 *
 * amqplib queues each message or method (a publish, an ack) in its channel's buffer and writes them
 * to the socket in a later pass of its multiplexer, one `socket.write` each: on a fast link that is
 * one system call per message, about a third of a publisher's CPU. Corking the socket for each
 * pass turns them into one `writev` (a pass stops at the socket's high-water mark, so a write is
 * at most about 64 KiB). Nothing waits longer: the pass uncorks before it returns.
 *
 * Returns false, and changes nothing, when amqplib's internals are not what this expects.
 */
export function batchWrites(model: ChannelModel): boolean {
  const connection = (model as unknown as Internals).connection
  const stream = connection?.stream
  const muxer = connection?.muxer
  const pass = muxer?._readIncoming
  if (
    muxer === undefined ||
    typeof pass !== 'function' ||
    typeof stream?.cork !== 'function' ||
    typeof stream.uncork !== 'function'
  ) {
    return false
  }
  const socket = stream as { cork(): void; uncork(): void }
  muxer._readIncoming = function corkedPass(this: unknown, ...args: unknown[]) {
    socket.cork()
    try {
      return pass.apply(this, args)
    } finally {
      socket.uncork()
    }
  }
  return true
}

/** Declares the topology on a fresh channel; a 406/404 is a {@link TopologyConflictError}. */
export async function declareTopology(
  connection: ChannelModel,
  topology: ResolvedTopology,
): Promise<void> {
  if (topology.declarations.length === 0) return
  let channel: Channel = await connection.createChannel()
  channel.on('error', () => {})
  try {
    for (const declaration of topology.declarations) {
      try {
        await declaration.run(channel)
      } catch (error) {
        const code = closeCode(error)
        if (code === 406 || code === 404 || code === 405) {
          throw new TopologyConflictError(
            declaration.name,
            `cannot declare ${declaration.kind} "${declaration.name}": ${(error as Error).message}` +
              (code === 406
                ? ' (it exists with other settings: delete it or change the definition to match)'
                : ''),
            { cause: error },
          )
        }
        throw error
      }
    }
  } finally {
    await closeSafely(channel)
    channel = undefined as unknown as Channel
  }
}

/**
 * One AMQP connection that reconnects with backoff and jitter across the cluster's URLs,
 * declares the topology on every connect, and stops (state `failed`) on a topology conflict
 * instead of reconnecting in a loop.
 */
export class ManagedConnection extends Emitter<ConnectionEvents> {
  readonly settings: ConnectionSettings
  state: 'idle' | 'connecting' | 'connected' | 'failed' | 'closed' = 'idle'
  connection: ChannelModel | undefined
  epoch = 0
  reconnects = 0
  failure: Error | undefined
  #next = 0
  #abort = new AbortController()
  #loop: Promise<void> | undefined
  #waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = []

  constructor(settings: ConnectionSettings) {
    super()
    this.settings = settings
  }

  start(): void {
    if (this.#loop !== undefined || this.state === 'closed') return
    this.state = 'connecting'
    this.#loop = this.#run()
  }

  /** Resolves once connected (now or later); rejects if the connection failed or closed. */
  connected(): Promise<void> {
    if (this.state === 'connected') return Promise.resolve()
    if (this.state === 'failed') return Promise.reject(this.failure)
    if (this.state === 'closed') return Promise.reject(new MqClosedError('broker', 'connect'))
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }))
  }

  #settleWaiters(error?: Error): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) error === undefined ? w.resolve() : w.reject(error)
  }

  async #run(): Promise<void> {
    const { urls, heartbeatMs, connectTimeoutMs, backoff, name, role } = this.settings
    let attempt = 0
    let lastError: Error | undefined
    while (!this.#abort.signal.aborted) {
      const url = urls[this.#next++ % urls.length] as string
      let connection: ChannelModel | undefined
      try {
        connection = await this.#unlessClosed(
          amqp.connect(withHeartbeat(url, heartbeatMs), {
            timeout: connectTimeoutMs,
            clientProperties: { connection_name: `${name} (${role})` },
          }),
          'connect',
          (late) => void closeSafely(late),
        )
        connection.on('error', () => {})
        batchWrites(connection)
        if (this.#abort.signal.aborted) {
          await closeSafely(connection)
          return
        }
        const closed = new Promise<Error | undefined>((resolve) =>
          connection?.once('close', resolve),
        )
        connection.on('blocked', (reason: string) => this.emit('blocked', { reason }))
        connection.on('unblocked', () => this.emit('unblocked', {}))
        // cut short by close() too: on a connection gone silent here a channel's open or a
        // declaration never settles, and only the heartbeats (2x heartbeat) would end the wait
        await this.#unlessClosed(declareTopology(connection, this.settings.topology), 'declare')
        this.connection = connection
        this.epoch++
        if (attempt > 0 || this.epoch > 1) this.reconnects++
        attempt = 0
        this.state = 'connected'
        this.emit('connect', { connection, url: redact(url), epoch: this.epoch })
        this.#settleWaiters()
        lastError = await closed
        this.connection = undefined
        if (this.state === 'connected') this.state = 'connecting'
        this.emit('disconnect', { error: lastError, epoch: this.epoch })
      } catch (error) {
        lastError = error as Error
        if (error instanceof TopologyConflictError) {
          this.state = 'failed'
          this.failure = error
          if (connection !== undefined) await closeSafely(connection)
          this.emit('failed', { error })
          this.#settleWaiters(error)
          return
        }
        if (connection !== undefined) await closeSafely(connection)
      }
      if (this.#abort.signal.aborted) return
      attempt++
      const delay = backoffDelay(backoff, attempt)
      this.emit('reconnecting', { attempt, delayMs: delay, error: lastError })
      try {
        await sleep(delay, undefined, { signal: this.#abort.signal })
      } catch {
        return
      }
    }
  }

  /**
   * Settles like `step`, or rejects as soon as close() is called: close() does not wait out
   * `connectTimeout` for a node that does not answer, nor a declaration on a connection gone
   * silent (the loop's catch then closes that connection). `late` gets what settles afterwards
   * (a connection that opens after close() is closed).
   */
  #unlessClosed<T>(step: Promise<T>, operation: string, late?: (value: T) => void): Promise<T> {
    const signal = this.#abort.signal
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        step.then(late, () => {})
        reject(new MqClosedError('broker', operation))
      }
      signal.addEventListener('abort', onAbort, { once: true })
      step.then(
        (value) => {
          signal.removeEventListener('abort', onAbort)
          resolve(value)
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort)
          reject(error)
        },
      )
    })
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return
    const wasFailed = this.state === 'failed'
    this.state = 'closed'
    this.#abort.abort()
    const connection = this.connection
    this.connection = undefined
    if (connection !== undefined) await closeSafely(connection)
    await this.#loop
    if (!wasFailed) this.#settleWaiters(new MqClosedError('broker', 'connect'))
  }
}
