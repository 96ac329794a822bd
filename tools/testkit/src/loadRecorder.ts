/** One call made under load: what, on which key, when, how long, and how it failed if it did. */
export interface RecordedCall {
  /** The operation's name, e.g. `'run'` or `'consume'`. */
  op: string
  /** The key it was about (for slot attribution). */
  key: string
  /** `performance.now()` when it started. */
  startedAt: number
  /** How long it took, in milliseconds. */
  ms: number
  /** What it threw; absent when it succeeded. */
  error?: unknown
}

/** Figures of one operation over a window of calls. */
export interface CallSummary {
  /** Calls made. */
  calls: number
  /** Calls that threw. */
  errors: number
  /** Errors by `code` (`'untyped'` for an error without a string `code`). */
  errorsByCode: Record<string, number>
  /** 99th percentile duration, milliseconds. */
  p99Ms: number
  /** Longest call, milliseconds. */
  maxMs: number
}

/** A set of loops making calls until stopped; every call is recorded. */
export interface LoadRecorder {
  /** Every call recorded so far. */
  readonly calls: readonly RecordedCall[]
  /** Times `fn`, records it under `op` and `key`, and returns its result (or `undefined` when it threw). */
  call<T>(op: string, key: string, fn: () => Promise<T>): Promise<T | undefined>
  /** Stops the loops and waits until every one has returned. */
  stop(): Promise<void>
}

/**
 * Runs `loops` concurrent loops, each calling `body(loop, iteration, recorder)` until
 * `stop()`; `body` makes its calls through `recorder.call` so that every call is timed and
 * its error kept (the loop goes on after a failed call). For failover tests: start it,
 * kill a node, wait, stop, then {@link summarizeCalls}.
 *
 * @example
 * ```ts
 * const load = startLoad(10, async (loop, i, rec) => {
 *   await rec.call('consume', `k:${loop}`, () => limiter.consume(`k:${loop}`))
 * })
 * await cluster.kill(master.port)
 * await sleep(5000)
 * await load.stop()
 * ```
 */
export function startLoad(
  loops: number,
  body: (loop: number, iteration: number, recorder: LoadRecorder) => Promise<void>,
): LoadRecorder {
  const calls: RecordedCall[] = []
  let stopped = false
  const recorder: LoadRecorder = {
    calls,
    async call(op, key, fn) {
      const startedAt = performance.now()
      try {
        const value = await fn()
        calls.push({ op, key, startedAt, ms: performance.now() - startedAt })
        return value
      } catch (error) {
        calls.push({ op, key, startedAt, ms: performance.now() - startedAt, error })
        return undefined
      }
    },
    async stop() {
      stopped = true
      await running
    },
  }
  const running = Promise.all(
    Array.from({ length: loops }, async (_, loop) => {
      for (let i = 0; !stopped; i++) {
        await body(loop, i, recorder)
        // let timers (the kill, the probes) run between calls on a busy loop
        if (i % 20 === 19) await new Promise((resolve) => setImmediate(resolve))
      }
    }),
  )
  return recorder
}

/** Summarizes the calls of one operation (all calls when `op` is omitted). */
export function summarizeCalls(calls: readonly RecordedCall[], op?: string): CallSummary {
  const mine = op === undefined ? calls : calls.filter((c) => c.op === op)
  const durations = mine.map((c) => c.ms).sort((a, b) => a - b)
  const errorsByCode: Record<string, number> = {}
  let errors = 0
  for (const call of mine) {
    if (!('error' in call)) continue
    errors++
    const code = (call.error as { code?: unknown } | null)?.code
    const name = typeof code === 'string' ? code : 'untyped'
    errorsByCode[name] = (errorsByCode[name] ?? 0) + 1
  }
  return {
    calls: mine.length,
    errors,
    errorsByCode,
    p99Ms: round(
      durations[Math.min(durations.length - 1, Math.floor(durations.length * 0.99))] ?? 0,
    ),
    maxMs: round(durations.at(-1) ?? 0),
  }
}

/**
 * When callers saw the keys `onKey` accepts served again: milliseconds from `since` (the
 * kill) to the earliest end of a call on such a key that started after `since`, succeeded,
 * and ended after the last failed call on those keys. `undefined` when none succeeded.
 */
export function servedAgainAfter(
  calls: readonly RecordedCall[],
  since: number,
  onKey: (key: string) => boolean,
): number | undefined {
  let lastFailureEnd = since
  for (const call of calls)
    if ('error' in call && onKey(call.key))
      lastFailureEnd = Math.max(lastFailureEnd, call.startedAt + call.ms)
  let firstSuccess: number | undefined
  for (const call of calls) {
    if ('error' in call || !onKey(call.key)) continue
    const end = call.startedAt + call.ms
    if (
      call.startedAt >= since &&
      end >= lastFailureEnd &&
      (firstSuccess === undefined || end < firstSuccess)
    )
      firstSuccess = end
  }
  return firstSuccess === undefined ? undefined : round(firstSuccess - since)
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10
}
