import type { ExecutionContext } from '../policy.js'

/** The internal entry every policy of this package implements; pipelines chain through it. */
export const RUN: unique symbol = Symbol('ballast.resilience.run')

/** A signal that never aborts: the context's signal when the caller passed none. */
export const NEVER_ABORTED: AbortSignal = new AbortController().signal

/** A context of the first attempt with the caller's signal. */
export class RootContext implements ExecutionContext {
  readonly signal: AbortSignal
  readonly attempt = 1
  constructor(signal: AbortSignal) {
    this.signal = signal
  }
}

/** The context every call without a caller signal shares (nothing allocated per call). */
export const ROOT_CONTEXT: ExecutionContext = new RootContext(NEVER_ABORTED)

export function rootContext(signal: AbortSignal | undefined): ExecutionContext {
  return signal === undefined ? ROOT_CONTEXT : new RootContext(signal)
}

/** Calls `fn` and always returns a promise, turning a synchronous throw into a rejection. */
export function invoke<T>(
  fn: (context: ExecutionContext) => T | PromiseLike<T>,
  context: ExecutionContext,
): Promise<T> {
  try {
    const result = fn(context)
    return result instanceof Promise ? result : Promise.resolve(result)
  } catch (error) {
    return Promise.reject(error)
  }
}
