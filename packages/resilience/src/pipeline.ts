import type { CircuitBreaker } from './circuitBreaker.js'
import type { FallbackPolicy } from './fallback.js'
import { RUN, rootContext } from './internal/context.js'
import { checkArgument } from './internal/validate.js'
import type { ExecutionContext, Operation, Policy } from './policy.js'

/**
 * The union of the substitute types of a list of policies: what the fallbacks (of a
 * {@link FallbackPolicy}, a {@link CircuitBreaker}'s `fallback`, a nested {@link Pipeline})
 * may resolve with instead of the work's own result.
 */
export type ExtraOf<P extends readonly Policy<unknown>[]> = ExtraOfOne<P[number]>

/** The substitute type of one policy (`never` for policies that only pass results through). */
export type ExtraOfOne<P> =
  P extends FallbackPolicy<infer F>
    ? F
    : P extends Pipeline<infer E>
      ? E
      : P extends CircuitBreaker<infer _A, infer R>
        ? R
        : never

type Runner = (fn: Operation<unknown>, context: ExecutionContext) => Promise<unknown>

function runnerOf(policy: Policy<unknown>): Runner {
  const run = policy[RUN]
  if (typeof run === 'function') return run.bind(policy) as Runner
  // A policy from elsewhere: it gets the signal, and the attempt number is carried over.
  return (fn, context) =>
    policy.execute(
      (inner) =>
        fn(
          inner.attempt === context.attempt
            ? inner
            : { signal: inner.signal, attempt: context.attempt },
        ),
      context.signal,
    )
}

/**
 * A composition of policies, outermost first: `pipeline(retry(), breaker, timeout(1000))` runs
 * every try through the breaker and gives each its own time limit. Create it with
 * {@link pipeline}.
 */
export class Pipeline<Extra = never> implements Policy<Extra> {
  readonly #run: Runner
  readonly #policies: readonly Policy<unknown>[]

  /** Use {@link pipeline}. */
  constructor(policies: readonly Policy<unknown>[]) {
    if (policies.length === 0) checkArgument.invalid('policies', 'at least one policy', policies)
    policies.forEach((p, i) => {
      if (p === null || typeof p !== 'object' || typeof p.execute !== 'function') {
        checkArgument.invalid(`policies[${i}]`, 'a policy (an object with execute())', p)
      }
    })
    this.#policies = Object.freeze([...policies])
    const runners = policies.map(runnerOf)
    // Build the chain once: each layer calls the next with the context it was given.
    let run: Runner = (fn, context) => runners[runners.length - 1]!(fn, context)
    for (let i = runners.length - 2; i >= 0; i--) {
      const outer = runners[i]!
      const inner = run
      run = (fn, context) => outer((c) => inner(fn, c), context)
    }
    this.#run = run
  }

  /** The policies, outermost first. */
  get policies(): readonly Policy<unknown>[] {
    return this.#policies
  }

  /**
   * The `stats()` of each policy, in the pipeline's order (`undefined` for a policy without
   * one). The pipeline keeps no counters of its own, so it adds nothing per call.
   */
  stats(): unknown[] {
    return this.#policies.map((p) => {
      const stats = (p as { stats?: () => unknown }).stats
      return typeof stats === 'function' ? stats.call(p) : undefined
    })
  }

  /** Runs `fn` through every policy, outermost first. */
  execute<T>(fn: Operation<T>, signal?: AbortSignal): Promise<T | Extra> {
    return this.#run(fn as Operation<unknown>, rootContext(signal)) as Promise<T | Extra>
  }

  /** @internal */
  [RUN]<T>(fn: Operation<T>, context: ExecutionContext): Promise<T | Extra> {
    return this.#run(fn as Operation<unknown>, context) as Promise<T | Extra>
  }
}

/**
 * Composes policies in the order given, outermost first, into one {@link Policy} whose result
 * is typed: the work's own type, plus whatever a {@link fallback} in the list may return.
 *
 * @example
 * ```ts
 * import { bulkhead, circuitBreaker, pipeline, retry, timeout } from '@ballast/resilience'
 *
 * const psp = pipeline(
 *   retry({ maxAttempts: 3 }),
 *   circuitBreaker({ name: 'psp' }),
 *   timeout('2s'),
 *   bulkhead({ limit: 32, queue: 64 }),
 * )
 * const charge = await psp.execute(({ signal }) => pspClient.charge(order, { signal }))
 * ```
 */
export function pipeline<P extends readonly Policy<unknown>[]>(
  ...policies: P
): Pipeline<ExtraOf<P>> {
  return new Pipeline<ExtraOf<P>>(policies)
}
