/** Something {@link Disposables.use} knows how to release. */
export type Releasable =
  | { cleanup(): unknown }
  | { close(): unknown }
  | { quit(): unknown }
  | { disconnect(): unknown }
  | { end(): unknown }

/** A stack of clean-ups, run last-in first-out. */
export interface Disposables {
  /** Registers a clean-up function. */
  defer(cleanup: () => unknown): void
  /** Registers `resource` (its `cleanup`, `close`, `disconnect`, `quit` or `end`, the first it has) and returns it. */
  use<T extends Releasable>(resource: T): T
  /** Runs every clean-up, newest first, even when some fail; throws an AggregateError of the failures. */
  cleanup(): Promise<void>
}

function releaseOf(resource: Releasable): () => unknown {
  for (const method of ['cleanup', 'close', 'disconnect', 'quit', 'end'] as const) {
    const fn = (resource as Record<string, unknown>)[method]
    if (typeof fn === 'function') return () => fn.call(resource)
  }
  throw new TypeError('expected a resource with cleanup(), close(), quit(), disconnect() or end()')
}

/**
 * Collects clean-ups as a test file acquires resources and runs them all in `afterAll`.
 *
 * @example
 * ```ts
 * const bin = disposables()
 * afterAll(() => bin.cleanup())
 * const proxy = bin.use(await createFaultProxy({ host: '127.0.0.1', port: 6379 }))
 * const redis = bin.use(new Redis(proxy.url(await redisUrl())))
 * ```
 */
export function disposables(): Disposables {
  const stack: Array<() => unknown> = []
  return {
    defer(cleanup) {
      stack.push(cleanup)
    },
    use(resource) {
      stack.push(releaseOf(resource))
      return resource
    },
    async cleanup() {
      const failures: unknown[] = []
      while (stack.length > 0) {
        try {
          await stack.pop()!()
        } catch (error) {
          failures.push(error)
        }
      }
      if (failures.length > 0)
        throw new AggregateError(failures, `${failures.length} clean-up(s) failed`)
    },
  }
}
