import { vi } from 'vitest'

/**
 * Collects the errors that event listeners throw. Every ballast emitter rethrows a listener's
 * error in a microtask, where it would be an uncaught exception that fails the test run; this
 * spies on `queueMicrotask` so each task still runs through the real one, in order, and an
 * error it throws lands in the returned array instead (when `isListenerError` accepts it;
 * anything else is thrown on as before). The errors arrive in microtasks: read the array after
 * an `await`, or through `vi.waitFor`. `vi.restoreAllMocks()` removes the spy.
 *
 * @example
 * ```ts
 * const rethrown = captureListenerErrors()
 * cache.on('load-failed', () => { throw bug })
 * await cache.getOrSet('k', failingLoader) // still resolves
 * await vi.waitFor(() => expect(rethrown).toEqual([bug]))
 * ```
 */
export function captureListenerErrors(
  isListenerError: (error: unknown) => boolean = () => true,
): unknown[] {
  const errors: unknown[] = []
  const queue = globalThis.queueMicrotask
  vi.spyOn(globalThis, 'queueMicrotask').mockImplementation((task) =>
    queue(() => {
      try {
        task()
      } catch (error) {
        if (!isListenerError(error)) throw error
        errors.push(error)
      }
    }),
  )
  return errors
}
