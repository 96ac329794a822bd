import type { ServerResponse } from 'node:http'
import type { Writable } from 'node:stream'
import type { Span } from '@opentelemetry/api'
import type { Dispatcher } from 'undici'
import type { Endpoint } from '../../endpoint.js'
import type { RequestContext } from './context.js'

/** What an {@link Attempt} calls back into: the proxy. */
export interface AttemptOwner {
  /** Larger responses are not stored in the cache. */
  readonly maxCacheBytes: number
  onResponseStart(
    attempt: Attempt,
    controller: Dispatcher.DispatchController,
    status: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage: string | undefined,
  ): void
  onAttemptError(attempt: Attempt, error: Error): void
  /** The upstream response ended (its body relayed). */
  onAttemptEnd(attempt: Attempt): void
  /** Stores the response the attempt collected. */
  store(attempt: Attempt): void
}

function headersTimeoutError(): Error {
  return Object.assign(new Error('upstream did not send response headers in time'), {
    code: 'UND_ERR_HEADERS_TIMEOUT',
  })
}

/** The precise headers timer of an attempt fired. */
export function onHeadersTimeout(attempt: Attempt): void {
  attempt.timer = undefined
  attempt.timedOut = true
  attempt.controller?.abort(headersTimeoutError())
}

/** One try of a request on one endpoint: the undici dispatch handler that relays the response. */
export class Attempt implements Dispatcher.DispatchHandler {
  readonly ctx: RequestContext
  readonly endpoint: Endpoint<string>
  readonly startedAt: number
  controller: Dispatcher.DispatchController | undefined
  ended = false
  retrying = false
  /** Where the body goes: the client's response, or the compressor in front of it. */
  sink: Writable | undefined
  /** The body collected for the cache, or `undefined` when it is not stored. */
  chunks: Buffer[] | undefined
  size = 0
  maxAge = 0
  stored: { status: number; headers: Record<string, string | string[]> } | undefined
  lastError: unknown = undefined
  /** The precise headers timer (undici's own runs on coarse timers). */
  timer: ReturnType<typeof setTimeout> | undefined = undefined
  timedOut = false
  /** The upstream response could not be relayed; the client already got a 502. */
  invalid = false
  /**
   * The announced length of a small body sent straight to the client (no compression), or -1:
   * when it arrives in one chunk, status line, headers and body leave in one write.
   */
  wholeBodyLength = -1
  /** Whether its `ballast:lb:proxy:attempt` start was published (then its end is, once). */
  published = false
  /** Its end was published. */
  reported = false
  /** The upstream request's headers when a subscriber changed them (trace context). */
  headers: string[] | undefined = undefined
  /** Why it failed, if it did. */
  error: unknown = undefined
  /** The attempt's CLIENT span, when the request is traced. */
  span: Span | undefined = undefined
  /** `performance.now()` when the request was dispatched. */
  sentAt = 0
  /** The upstream's status, once its headers arrived. */
  status: number | undefined = undefined

  constructor(ctx: RequestContext, endpoint: Endpoint<string>, startedAt: number) {
    this.ctx = ctx
    this.endpoint = endpoint
    this.startedAt = startedAt
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.ctx.aborted) controller.abort(new Error('client went away'))
    else if (this.timedOut) controller.abort(headersTimeoutError())
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    if (statusCode < 200) return
    this.ctx.proxy.onResponseStart(this, controller, statusCode, headers, statusMessage)
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const chunks = this.chunks
    if (chunks !== undefined) {
      this.size += chunk.length
      if (this.size > this.ctx.proxy.maxCacheBytes) this.chunks = undefined
      else chunks.push(chunk)
    }
    const sink = this.sink
    if (sink === undefined) return
    if (this.wholeBodyLength === chunk.length) {
      // The whole body in one chunk: as a latin1 string (bytes unchanged), node's http response
      // joins it to the head and sends both in one write instead of a writev of two buffers.
      this.wholeBodyLength = -1
      this.sink = undefined
      ;(sink as ServerResponse).end(chunk.toString('latin1'), 'latin1')
      return
    }
    this.wholeBodyLength = -1
    if (!sink.write(chunk)) {
      controller.pause()
      sink.once('drain', () => controller.resume())
    }
  }

  onResponseEnd(): void {
    this.ctx.proxy.onAttemptEnd(this)
    if (this.chunks !== undefined && this.stored !== undefined) this.ctx.proxy.store(this)
    if (this.sink === undefined) return
    this.sink.end()
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.ctx.proxy.onAttemptError(this, error)
  }
}
