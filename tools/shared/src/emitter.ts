import { EventEmitter } from 'node:events'

/** A listener of one event: it receives the event's one payload object. */
export type Listener<P> = (payload: P) => void

/** Removes the listener it was returned for; calling it twice does nothing. */
export type Unsubscribe = () => void

type Wrapped = ((payload: unknown) => void) & { listener: Listener<never> }

/**
 * The one event emitter of every ballast package, built on `node:events`. Events are named in
 * kebab-case and past tense and carry one payload object, typed by the events map `E`
 * (`{ 'endpoint-added': EndpointAddedEvent }`).
 *
 * - `on()` and `once()` return a function that removes the listener; `off()` does too.
 * - A listener that throws never breaks the operation that emitted, nor the listeners after it:
 *   its error is rethrown in a microtask, where it is an `uncaughtException` like any other
 *   bug in application code. A listener's returned promise is not awaited.
 * - `has(event)` lets a hot path skip building a payload nobody listens to.
 *
 * Components expose `on`/`once`/`off` by extending it or by delegating to one.
 *
 * @example
 * ```ts
 * interface BreakerEvents { opened: { name: string } }
 * const events = new Emitter<BreakerEvents>()
 * const off = events.on('opened', ({ name }) => console.warn(name, 'opened'))
 * events.emit('opened', { name: 'payments' })
 * off()
 * ```
 */
export class Emitter<E extends { [K in keyof E]: object }> {
  readonly #events = new EventEmitter()
  // The events that have a listener now, so has() on a hot path (a balancer's pick()) is one
  // Set lookup; kept in step with #events after every add and removal.
  readonly #live = new Set<string>()

  constructor() {
    // Many listeners on one event (a dashboard per breaker) are not a leak here.
    this.#events.setMaxListeners(0)
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E & string>(event: K, listener: Listener<E[K]>): Unsubscribe {
    this.#events.on(event, guard(listener))
    this.#live.add(event)
    return () => this.off(event, listener)
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof E & string>(event: K, listener: Listener<E[K]>): Unsubscribe {
    const wrapped: Wrapped = guard(listener, () => this.#remove(event, wrapped))
    this.#events.on(event, wrapped)
    this.#live.add(event)
    return () => this.off(event, listener)
  }

  /** Removes a listener added with `on()` or `once()` (the most recent one, if added twice). */
  off<K extends keyof E & string>(event: K, listener: Listener<E[K]>): void {
    // node:events matches a wrapper by its `listener` property, as it does for once().
    this.#remove(event, listener as (payload: unknown) => void)
  }

  /** Whether any listener is registered for the event. */
  has(event: keyof E & string): boolean {
    return this.#live.has(event)
  }

  /** How many listeners the event has. */
  listenerCount(event: keyof E & string): number {
    return this.#events.listenerCount(event)
  }

  /** Calls every listener of the event with the payload; never throws a listener's error. */
  emit<K extends keyof E & string>(event: K, payload: E[K]): void {
    this.#events.emit(event, payload)
  }

  /** Removes every listener, of one event or of all. */
  removeAllListeners(event?: keyof E & string): void {
    if (event === undefined) {
      this.#events.removeAllListeners()
      this.#live.clear()
    } else {
      this.#events.removeAllListeners(event)
      this.#live.delete(event)
    }
  }

  #remove(event: string, listener: (payload: unknown) => void): void {
    this.#events.off(event, listener)
    if (this.#events.listenerCount(event) === 0) this.#live.delete(event)
  }
}

function guard<P>(listener: Listener<P>, before?: () => void): Wrapped {
  if (typeof listener !== 'function') {
    throw new TypeError(`invalid listener: expected a function, got ${typeof listener}`)
  }
  const wrapped = ((payload: unknown) => {
    before?.()
    try {
      listener(payload as P)
    } catch (error) {
      queueMicrotask(() => {
        throw error
      })
    }
  }) as Wrapped
  wrapped.listener = listener as Listener<never>
  return wrapped
}
