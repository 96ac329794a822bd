/** A listener of one event, receiving the event's payload. */
export type Listener<P> = (payload: P) => void

/**
 * The smallest typed emitter: one payload per event, listeners kept in arrays per event so
 * `has()` is a property read on hot paths. A listener that throws does not break the
 * component that emitted: the error is rethrown in a microtask, where it surfaces as an
 * uncaught exception like any other bug.
 */
export class Emitter<E> {
  #listeners: { [K in keyof E]?: Listener<E[K]>[] } = {}

  on<K extends keyof E>(event: K, listener: Listener<E[K]>): void {
    const list = this.#listeners[event]
    if (list === undefined) this.#listeners[event] = [listener]
    else list.push(listener)
  }

  off<K extends keyof E>(event: K, listener: Listener<E[K]>): void {
    const list = this.#listeners[event]
    if (list === undefined) return
    const i = list.indexOf(listener)
    if (i !== -1) list.splice(i, 1)
    if (list.length === 0) delete this.#listeners[event]
  }

  has(event: keyof E): boolean {
    return this.#listeners[event] !== undefined
  }

  emit<K extends keyof E>(event: K, payload: E[K]): void {
    const list = this.#listeners[event]
    if (list === undefined) return
    for (const listener of list.length === 1 ? list : list.slice()) {
      try {
        listener(payload)
      } catch (error) {
        queueMicrotask(() => {
          throw error
        })
      }
    }
  }

  clear(): void {
    this.#listeners = {}
  }
}
