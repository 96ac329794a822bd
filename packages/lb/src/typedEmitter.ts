/** A listener of one event of a {@link TypedEmitter}. */
export type Listener<Args extends unknown[]> = (...args: Args) => void

/**
 * A small typed event emitter: `on`/`once`/`off` with event names and payloads checked by the
 * compiler. A listener that throws does not stop the others; its error is rethrown on the next
 * tick so it is not swallowed. Emitting with no listeners costs one map lookup.
 */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> {
  readonly #listeners = new Map<keyof Events, Array<Listener<any>>>()

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const list = this.#listeners.get(event)
    if (list === undefined) this.#listeners.set(event, [listener])
    else list.push(listener)
    return () => this.off(event, listener)
  }

  /** Adds a listener called at most once. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const wrapped: Listener<Events[K]> = (...args) => {
      this.off(event, wrapped)
      listener(...args)
    }
    return this.on(event, wrapped)
  }

  /** Removes a listener added with {@link TypedEmitter.on}. */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    const list = this.#listeners.get(event)
    if (list === undefined) return
    const i = list.indexOf(listener)
    if (i !== -1) list.splice(i, 1)
    if (list.length === 0) this.#listeners.delete(event)
  }

  /** Whether any listener is registered for the event. */
  hasListeners(event: keyof Events): boolean {
    return this.#listeners.has(event)
  }

  /** Calls every listener of the event with the payload. */
  emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const list = this.#listeners.get(event)
    if (list === undefined) return
    for (const listener of list.slice()) {
      try {
        listener(...args)
      } catch (error) {
        queueMicrotask(() => {
          throw error
        })
      }
    }
  }
}
