import { EventEmitter } from 'node:events'

/** An EventEmitter whose event names and payloads are checked by TypeScript. */
export class TypedEmitter<Events extends Record<string, unknown>> {
  readonly #emitter = new EventEmitter()

  constructor() {
    this.#emitter.setMaxListeners(100)
  }

  on<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): this {
    this.#emitter.on(event, listener as (payload: unknown) => void)
    return this
  }

  once<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): this {
    this.#emitter.once(event, listener as (payload: unknown) => void)
    return this
  }

  off<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): this {
    this.#emitter.off(event, listener as (payload: unknown) => void)
    return this
  }

  /** @internal */
  emit<K extends keyof Events & string>(event: K, payload: Events[K]): void {
    if (this.#emitter.listenerCount(event) === 0) return
    try {
      this.#emitter.emit(event, payload)
    } catch {
      // a throwing listener must not break the connection machinery
    }
  }
}
