import type { RUN } from './internal/context.js'

/**
 * What every policy passes to the work it runs: the signal to stop on (the caller's, or one an
 * enclosing {@link timeout} aborts) and the attempt number an enclosing {@link retry} is on.
 */
export interface ExecutionContext {
  /**
   * Aborted when the caller's signal aborts or an enclosing timeout fires. Pass it to `fetch`,
   * database drivers and the like so abandoned work stops. Created on first read, so work
   * that never reads it costs no `AbortController`.
   */
  readonly signal: AbortSignal
  /** 1 for the first try, 2 for the first retry, and so on. */
  readonly attempt: number
}

/** The work a policy runs: a function of the {@link ExecutionContext}, sync or async. */
export type Operation<T> = (context: ExecutionContext) => T | PromiseLike<T>

/**
 * A resilience policy: {@link retry}, {@link timeout}, {@link bulkhead}, {@link fallback},
 * a {@link CircuitBreaker} or a {@link pipeline} of them. `Extra` is the type a policy may
 * resolve with instead of the work's own result (a fallback's value), so a pipeline's
 * result stays typed.
 */
export interface Policy<Extra = never> {
  /**
   * Runs `fn` under this policy.
   * @param fn The work; receives the {@link ExecutionContext}.
   * @param signal Stops the work (and any waiting for a retry or a queue slot) when aborted.
   */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T | Extra>
  /** @internal */
  [RUN]?<T>(fn: Operation<T>, context: ExecutionContext): Promise<T | Extra>
}
